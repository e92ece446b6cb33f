//! Bit reader for H.264/H.265 parameter sets (Exp-Golomb), total over truncated input.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitsExhausted;

pub struct BitReader<'a> {
    data: &'a [u8],
    pos_bits: usize,
}

/// Exp-Golomb codes longer than this are not valid in any parameter set field we read.
const EXP_GOLOMB_ZEROS_MAX: u32 = 31;

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos_bits: 0 }
    }

    pub fn bit(&mut self) -> Result<u32, BitsExhausted> {
        let byte = *self.data.get(self.pos_bits / 8).ok_or(BitsExhausted)?;
        let bit = (byte >> (7 - (self.pos_bits % 8))) & 1;
        self.pos_bits += 1;
        Ok(u32::from(bit))
    }

    pub fn bits(&mut self, n: u32) -> Result<u32, BitsExhausted> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v as u32)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), BitsExhausted> {
        if self.pos_bits + n > self.data.len() * 8 {
            return Err(BitsExhausted);
        }
        self.pos_bits += n;
        Ok(())
    }

    pub fn flag(&mut self) -> Result<bool, BitsExhausted> {
        Ok(self.bit()? == 1)
    }

    pub fn ue(&mut self) -> Result<u32, BitsExhausted> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > EXP_GOLOMB_ZEROS_MAX {
                return Err(BitsExhausted);
            }
        }
        let rest = self.bits(zeros)? as u64;
        Ok(((1u64 << zeros) - 1 + rest).min(u64::from(u32::MAX)) as u32)
    }

    pub fn se(&mut self) -> Result<i32, BitsExhausted> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Removes emulation-prevention bytes (00 00 03 -> 00 00) from a NAL unit.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0,1,2,3,4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!([r.ue(), r.ue(), r.ue(), r.ue()], [Ok(0), Ok(1), Ok(2), Ok(3)]);
        assert_eq!(r.se(), Ok(-2));
        assert!(BitReader::new(&[0, 0, 0, 0, 0]).ue().is_err());
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
