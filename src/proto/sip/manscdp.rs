//! MANSCDP (GB/T 28181 Annex A) XML bodies: the flat elements and Item lists gmv reads,
//! extracted by a small tolerant scanner (devices send unescaped '&', stray whitespace and
//! wrong declarations; a strict XML parser would refuse half of them).

/// Catalog items taken from one device; more is refused.
pub const CATALOG_ITEMS_MAX: usize = 10_000;
/// Element values longer than this are cut.
const VALUE_CHARS_MAX: usize = 256;

/// Text of the first `<tag>…</tag>` in `xml` (case-sensitive, as GB28181 specifies).
pub fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = xml[from..].find(&open) {
        let start = from + i + open.len();
        // `<DeviceID>` not `<DeviceIDx>`; attributes allowed: `<DeviceList Num="2">`.
        let after = xml[start..].chars().next()?;
        if after == '>' || after.is_whitespace() {
            let gt = start + xml[start..].find('>')?;
            if xml[..gt].ends_with('/') {
                return Some("");
            }
            let close = format!("</{tag}>");
            let end = gt + 1 + xml[gt + 1..].find(&close)?;
            return Some(xml[gt + 1..end].trim());
        }
        from = start;
    }
    None
}

fn value(xml: &str, tag: &str) -> Option<String> {
    let v = element(xml, tag)?;
    let v = v.trim_start_matches("<![CDATA[").trim_end_matches("]]>");
    Some(unescape(v).chars().take(VALUE_CHARS_MAX).collect())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Each `<Item>…</Item>` inside `xml`, bounded.
fn items(xml: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Item>") {
        let body = &rest[i + 6..];
        let Some(end) = body.find("</Item>") else { break };
        out.push(&body[..end]);
        rest = &body[end + 7..];
        if out.len() >= CATALOG_ITEMS_MAX {
            break;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Notify,
    Query,
    Response,
    Control,
}

/// The parts of a MANSCDP message gmv acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Manscdp {
    pub root: Root,
    pub cmd_type: String,
    pub sn: Option<u32>,
    pub device_id: String,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Keepalive,
    Catalog {
        sum_num: usize,
        items: Vec<CatalogItem>,
    },
    DeviceInfo(DeviceInfo),
    /// One packet of a RecordInfo answer (times as the device wrote them, local).
    RecordInfo {
        sum_num: usize,
        items: Vec<RecordItem>,
    },
    /// MediaStatus: `NotifyType` 121 is the end of a played-back or downloaded file.
    MediaStatus {
        notify_type: String,
    },
    /// An alarm a device reports (GB/T 28181 §9.4, A.2.5.6).
    Alarm(Alarm),
    /// The answer to a DeviceControl or DeviceConfig that has one: `Result` OK or ERROR.
    Result {
        result: String,
    },
    DeviceStatus(DeviceStatus),
    /// One packet of a PresetQuery answer.
    Presets {
        sum_num: usize,
        items: Vec<Preset>,
    },
    /// A catalog subscription's NOTIFY: items with what happened to each.
    CatalogChanges(Vec<(CatalogEvent, CatalogItem)>),
    /// A MobilePosition notification.
    Position(Position),
    Other,
}

/// What happened to a channel (GB/T 28181 A.2.6.2 catalog event notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogEvent {
    On,
    Off,
    VideoLost,
    Defect,
    Add,
    Del,
    Update,
}

impl CatalogEvent {
    pub fn parse(s: &str) -> Option<CatalogEvent> {
        Some(match s {
            "ON" => CatalogEvent::On,
            "OFF" => CatalogEvent::Off,
            "VLOST" => CatalogEvent::VideoLost,
            "DEFECT" => CatalogEvent::Defect,
            "ADD" => CatalogEvent::Add,
            "DEL" => CatalogEvent::Del,
            "UPDATE" => CatalogEvent::Update,
            _ => return None,
        })
    }

    /// The channel status an event leaves (None: the item itself says, or it is gone).
    pub fn status(self) -> Option<&'static str> {
        match self {
            CatalogEvent::On => Some("ON"),
            CatalogEvent::Off => Some("OFF"),
            CatalogEvent::VideoLost => Some("VLOST"),
            CatalogEvent::Defect => Some("DEFECT"),
            _ => None,
        }
    }
}

/// Where a mobile device is (MobilePosition notification).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub time: String,
    pub longitude: f64,
    pub latitude: f64,
    pub speed: Option<f64>,
    pub direction: Option<f64>,
    pub altitude: Option<f64>,
}

/// What a device says of itself in a DeviceStatus answer (texts as sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceStatus {
    pub result: String,
    pub online: String,
    pub status: String,
    pub encode: String,
    pub record: String,
    pub device_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preset {
    pub id: u8,
    pub name: String,
}

/// An alarm as the device reported it (texts as sent; the priority and method checked).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Alarm {
    /// The channel or device in alarm.
    pub device_id: String,
    /// 1 (highest) ..= 4.
    pub priority: u8,
    /// 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other.
    pub method: u8,
    /// `AlarmType` under `Info`, when given.
    pub alarm_type: Option<u32>,
    /// Local time as the device wrote it.
    pub time: String,
    pub description: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
}

/// A recording the device holds, as its RecordInfo answer lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordItem {
    pub device_id: String,
    pub name: String,
    pub file_path: String,
    pub address: String,
    pub start_time: String,
    pub end_time: String,
    pub secrecy: String,
    pub record_type: String,
    pub file_size: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogItem {
    pub device_id: String,
    pub name: String,
    pub manufacturer: String,
    pub status: String,
    pub parent_id: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub device_name: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManscdpError {
    NoRoot,
    MissingCmdType,
    MissingDeviceId,
    /// An alarm without a priority or method in range, or without its time.
    BadAlarm(&'static str),
    /// A catalog notification with an item whose `Event` is not one the standard names, or
    /// without a DeviceID.
    BadCatalogEvent,
    /// A position without both coordinates in range, or without its time.
    BadPosition,
}

pub fn parse(xml: &str) -> Result<Manscdp, ManscdpError> {
    let (root, inner) = [(Root::Notify, "Notify"), (Root::Response, "Response"), (Root::Query, "Query"), (Root::Control, "Control")]
        .into_iter()
        .find_map(|(r, tag)| element(xml, tag).map(|inner| (r, inner)))
        .ok_or(ManscdpError::NoRoot)?;
    let cmd_type = value(inner, "CmdType").filter(|c| !c.is_empty()).ok_or(ManscdpError::MissingCmdType)?;
    let device_id = value(inner, "DeviceID").filter(|c| !c.is_empty()).ok_or(ManscdpError::MissingDeviceId)?;
    let sn = value(inner, "SN").and_then(|s| s.parse().ok());
    let body = match (cmd_type.as_str(), &root) {
        ("Keepalive", Root::Notify) => Body::Keepalive,
        ("Catalog", Root::Notify) if inner.contains("<Event>") => Body::CatalogChanges(catalog_changes(inner)?),
        ("MobilePosition", Root::Notify) => Body::Position(position(inner)?),
        ("Catalog", Root::Response | Root::Notify) => {
            let sum_num = value(inner, "SumNum").and_then(|s| s.parse().ok()).unwrap_or(0);
            let list = element(inner, "DeviceList").unwrap_or("");
            let items = items(list).into_iter().filter_map(catalog_item).collect();
            Body::Catalog { sum_num, items }
        }
        ("DeviceInfo", Root::Response) => Body::DeviceInfo(DeviceInfo {
            device_name: value(inner, "DeviceName").unwrap_or_default(),
            manufacturer: value(inner, "Manufacturer").unwrap_or_default(),
            model: value(inner, "Model").unwrap_or_default(),
            firmware: value(inner, "Firmware").unwrap_or_default(),
            channels: value(inner, "Channel").and_then(|c| c.parse().ok()).unwrap_or(0),
        }),
        ("RecordInfo", Root::Response) => {
            let sum_num = value(inner, "SumNum").and_then(|s| s.parse().ok()).unwrap_or(0);
            let list = element(inner, "RecordList").unwrap_or("");
            let items = items(list)
                .into_iter()
                .map(|it| RecordItem {
                    device_id: value(it, "DeviceID").unwrap_or_default(),
                    name: value(it, "Name").unwrap_or_default(),
                    file_path: value(it, "FilePath").unwrap_or_default(),
                    address: value(it, "Address").unwrap_or_default(),
                    start_time: value(it, "StartTime").unwrap_or_default(),
                    end_time: value(it, "EndTime").unwrap_or_default(),
                    secrecy: value(it, "Secrecy").unwrap_or_default(),
                    record_type: value(it, "Type").unwrap_or_default(),
                    file_size: value(it, "FileSize").unwrap_or_default(),
                })
                .collect();
            Body::RecordInfo { sum_num, items }
        }
        ("MediaStatus", Root::Notify) => Body::MediaStatus { notify_type: value(inner, "NotifyType").unwrap_or_default() },
        ("Alarm", Root::Notify) => Body::Alarm(alarm(inner, &device_id)?),
        ("DeviceControl" | "DeviceConfig" | "Broadcast", Root::Response) => Body::Result { result: value(inner, "Result").unwrap_or_default() },
        ("DeviceStatus", Root::Response) => Body::DeviceStatus(DeviceStatus {
            result: value(inner, "Result").unwrap_or_default(),
            online: value(inner, "Online").unwrap_or_default(),
            status: value(inner, "Status").unwrap_or_default(),
            encode: value(inner, "Encode").unwrap_or_default(),
            record: value(inner, "Record").unwrap_or_default(),
            device_time: value(inner, "DeviceTime").unwrap_or_default(),
        }),
        ("PresetQuery", Root::Response) => {
            let list = element(inner, "PresetList").unwrap_or("");
            let items: Vec<Preset> = items(list)
                .into_iter()
                .filter_map(|it| {
                    Some(Preset { id: value(it, "PresetID")?.parse().ok().filter(|n| *n > 0)?, name: value(it, "PresetName").unwrap_or_default() })
                })
                .collect();
            // Devices that send one packet often leave SumNum out.
            let sum_num = value(inner, "SumNum").and_then(|s| s.parse().ok()).unwrap_or(items.len());
            Body::Presets { sum_num, items }
        }
        _ => Body::Other,
    };
    Ok(Manscdp { root, cmd_type, sn, device_id, body })
}

fn catalog_item(it: &str) -> Option<CatalogItem> {
    Some(CatalogItem {
        device_id: value(it, "DeviceID").filter(|d| !d.is_empty())?,
        name: value(it, "Name").unwrap_or_default(),
        manufacturer: value(it, "Manufacturer").unwrap_or_default(),
        status: value(it, "Status").unwrap_or_default(),
        parent_id: value(it, "ParentID").unwrap_or_default(),
        address: value(it, "Address").unwrap_or_default(),
    })
}

/// Every item of a catalog notification, or an error if any is unreadable (all or nothing).
fn catalog_changes(inner: &str) -> Result<Vec<(CatalogEvent, CatalogItem)>, ManscdpError> {
    let list = element(inner, "DeviceList").unwrap_or("");
    items(list)
        .into_iter()
        .map(|it| {
            let event = value(it, "Event").and_then(|e| CatalogEvent::parse(&e)).ok_or(ManscdpError::BadCatalogEvent)?;
            Ok((event, catalog_item(it).ok_or(ManscdpError::BadCatalogEvent)?))
        })
        .collect()
}

fn position(inner: &str) -> Result<Position, ManscdpError> {
    let number = |tag: &str| value(inner, tag).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
    let longitude = number("Longitude").filter(|v| v.abs() <= 180.0).ok_or(ManscdpError::BadPosition)?;
    let latitude = number("Latitude").filter(|v| v.abs() <= 90.0).ok_or(ManscdpError::BadPosition)?;
    let time = value(inner, "Time").filter(|t| !t.is_empty()).ok_or(ManscdpError::BadPosition)?;
    Ok(Position { time, longitude, latitude, speed: number("Speed"), direction: number("Direction"), altitude: number("Altitude") })
}

fn alarm(inner: &str, device_id: &str) -> Result<Alarm, ManscdpError> {
    let number = |tag: &str| value(inner, tag).and_then(|v| v.parse::<u32>().ok());
    let priority = number("AlarmPriority").filter(|p| (1..=4).contains(p)).ok_or(ManscdpError::BadAlarm("AlarmPriority must be 1..=4"))?;
    let method = number("AlarmMethod").filter(|m| (1..=7).contains(m)).ok_or(ManscdpError::BadAlarm("AlarmMethod must be 1..=7"))?;
    let time = value(inner, "AlarmTime").filter(|t| !t.is_empty()).ok_or(ManscdpError::BadAlarm("AlarmTime missing"))?;
    let coordinate = |tag: &str, max: f64| value(inner, tag).and_then(|v| v.parse::<f64>().ok()).filter(|c| c.is_finite() && c.abs() <= max);
    let alarm_type = element(inner, "Info").and_then(|info| value(info, "AlarmType")).and_then(|t| t.parse().ok());
    Ok(Alarm {
        device_id: device_id.to_string(),
        priority: priority as u8,
        method: method as u8,
        alarm_type,
        time,
        description: value(inner, "AlarmDescription").unwrap_or_default(),
        longitude: coordinate("Longitude", 180.0),
        latitude: coordinate("Latitude", 90.0),
    })
}

/// The platform's answer to an alarm notification (GB/T 28181 A.2.6.4).
pub fn alarm_response(sn: u32, device_id: &str, encoding_label: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding_label}\"?>\r\n<Response>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<Result>OK</Result>\r\n</Response>\r\n"
    )
}

/// A query the platform sends (Catalog, DeviceInfo, DeviceStatus…).
pub fn query(cmd_type: &str, sn: u32, device_id: &str, encoding_label: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding_label}\"?>\r\n<Query>\r\n<CmdType>{cmd_type}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n"
    )
}

/// A RecordInfo query for a channel: local times `yyyy-MM-ddTHH:mm:ss`, `record_type` one of
/// all/time/alarm/manual (fixed words; the caller checks them).
pub fn record_info_query(sn: u32, channel_id: &str, start: &str, end: &str, record_type: &str, encoding_label: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding_label}\"?>\r\n<Query>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel_id}</DeviceID>\r\n<StartTime>{start}</StartTime>\r\n<EndTime>{end}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>{record_type}</Type>\r\n</Query>\r\n"
    )
}

/// Text for an XML element: `&`, `<`, `>`, quotes escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// A DeviceConfig `BasicParam` (name, heartbeat interval and count); fields left out are not
/// changed by the device.
pub fn device_config(
    sn: u32,
    device_id: &str,
    name: Option<&str>,
    heartbeat_s: Option<u32>,
    heartbeat_count: Option<u32>,
    encoding_label: &str,
) -> String {
    let mut params = String::new();
    if let Some(n) = name {
        params.push_str(&format!("<Name>{}</Name>\r\n", escape(n)));
    }
    if let Some(h) = heartbeat_s {
        params.push_str(&format!("<HeartBeatInterval>{h}</HeartBeatInterval>\r\n"));
    }
    if let Some(c) = heartbeat_count {
        params.push_str(&format!("<HeartBeatCount>{c}</HeartBeatCount>\r\n"));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding_label}\"?>\r\n<Control>\r\n<CmdType>DeviceConfig</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<BasicParam>\r\n{params}</BasicParam>\r\n</Control>\r\n"
    )
}

/// A DeviceControl for `device_id` (a channel, or the device) carrying one command element
/// (`PTZCmd` with 16 hex digits, `IFameCmd`, `TeleBoot`); the caller gives only fixed names and
/// hex or keyword texts, so nothing needs escaping.
pub fn device_control(sn: u32, device_id: &str, element: &str, text: &str, encoding_label: &str) -> String {
    let info = if element == "PTZCmd" { "<Info>\r\n<ControlPriority>5</ControlPriority>\r\n</Info>\r\n" } else { "" };
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding_label}\"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<{element}>{text}</{element}>\r\n{info}</Control>\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CATALOG: &str = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17</SN>\r\n<DeviceID>34020000001110000001</DeviceID>\r\n<SumNum>3</SumNum>\r\n<DeviceList Num=\"2\">\r\n<Item>\r\n<DeviceID>34020000001310000001</DeviceID>\r\n<Name>前门 &amp; 大厅</Name>\r\n<Manufacturer>Hikvision</Manufacturer>\r\n<Status>ON</Status>\r\n<ParentID>34020000001110000001</ParentID>\r\n</Item>\r\n<Item>\r\n<DeviceID>34020000001310000002</DeviceID>\r\n<Name>Back</Name>\r\n<Status>OFF</Status>\r\n</Item>\r\n</DeviceList>\r\n</Response>\r\n";

    #[test]
    fn catalog_response() {
        let m = parse(CATALOG).unwrap();
        assert_eq!((m.root.clone(), m.cmd_type.as_str(), m.sn), (Root::Response, "Catalog", Some(17)));
        let Body::Catalog { sum_num, items } = m.body else { panic!() };
        assert_eq!(sum_num, 3);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "前门 & 大厅");
        assert_eq!(items[1].status, "OFF");
    }

    #[test]
    fn keepalive_and_device_info() {
        let k = parse("<?xml version=\"1.0\"?><Notify><CmdType>Keepalive</CmdType><SN>5</SN><DeviceID>dev</DeviceID><Status>OK</Status></Notify>")
            .unwrap();
        assert_eq!(k.body, Body::Keepalive);
        let d = parse("<Response><CmdType>DeviceInfo</CmdType><SN>1</SN><DeviceID>dev</DeviceID><DeviceName>IPC</DeviceName><Manufacturer>Dahua</Manufacturer><Channel>4</Channel></Response>").unwrap();
        let Body::DeviceInfo(info) = d.body else { panic!() };
        assert_eq!((info.manufacturer.as_str(), info.channels), ("Dahua", 4));
        assert!(query("Catalog", 3, "dev", "GB2312").contains("<CmdType>Catalog</CmdType>"));
    }

    #[test]
    fn record_info_answer_and_media_status() {
        let xml = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>17430</SN>\r\n<DeviceID>64010000041310000345</DeviceID>\r\n<Name>Camera1</Name>\r\n<SumNum>100</SumNum>\r\n<RecordList Num=\"1\">\r\n<Item>\r\n<DeviceID>64010000041310000345</DeviceID>\r\n<Name>Camera1</Name>\r\n<FilePath>/sd/0001.mp4</FilePath>\r\n<Address>Address 1</Address>\r\n<StartTime>2012-07-31T18:00:00</StartTime>\r\n<EndTime>2012-07-31T18:30:00</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n</RecordList>\r\n</Response>\r\n";
        let m = parse(xml).unwrap();
        let Body::RecordInfo { sum_num, items } = m.body else { panic!("{:?}", m.body) };
        assert_eq!(sum_num, 100);
        assert_eq!(items.len(), 1);
        let it = &items[0];
        assert_eq!(
            (it.file_path.as_str(), it.start_time.as_str(), it.end_time.as_str()),
            ("/sd/0001.mp4", "2012-07-31T18:00:00", "2012-07-31T18:30:00")
        );
        assert_eq!((it.record_type.as_str(), it.secrecy.as_str()), ("time", "0"));
        let q = record_info_query(9, "64010000041310000345", "2012-07-31T18:00:00", "2012-07-31T19:00:00", "all", "GB2312");
        assert!(
            q.contains("<CmdType>RecordInfo</CmdType>") && q.contains("<StartTime>2012-07-31T18:00:00</StartTime>") && q.contains("<Type>all</Type>")
        );
        let n = parse("<Notify><CmdType>MediaStatus</CmdType><SN>8</SN><DeviceID>c</DeviceID><NotifyType>121</NotifyType></Notify>").unwrap();
        assert_eq!(n.body, Body::MediaStatus { notify_type: "121".into() });
    }

    #[test]
    fn answers_with_a_result_status_or_presets() {
        let r = parse("<Response><CmdType>DeviceControl</CmdType><SN>3</SN><DeviceID>c</DeviceID><Result>ERROR</Result></Response>").unwrap();
        assert_eq!(r.body, Body::Result { result: "ERROR".into() });
        let s = parse("<Response><CmdType>DeviceStatus</CmdType><SN>4</SN><DeviceID>d</DeviceID><Result>OK</Result><Online>ONLINE</Online><Status>OK</Status><Encode>ON</Encode><Record>OFF</Record><DeviceTime>2026-12-01T10:00:00</DeviceTime></Response>").unwrap();
        let Body::DeviceStatus(s) = s.body else { panic!() };
        assert_eq!((s.online.as_str(), s.record.as_str(), s.device_time.as_str()), ("ONLINE", "OFF", "2026-12-01T10:00:00"));
        let p = parse("<Response><CmdType>PresetQuery</CmdType><SN>5</SN><DeviceID>c</DeviceID><PresetList Num=\"3\"><Item><PresetID>1</PresetID><PresetName>Gate</PresetName></Item><Item><PresetID>0</PresetID></Item><Item><PresetID>9</PresetID><PresetName>Yard</PresetName></Item></PresetList></Response>").unwrap();
        assert_eq!(p.body, Body::Presets { sum_num: 2, items: vec![Preset { id: 1, name: "Gate".into() }, Preset { id: 9, name: "Yard".into() }] });
        let c = device_config(6, "d", Some("Gate <1> & co"), Some(30), None, "GB2312");
        assert!(
            c.contains("<Name>Gate &lt;1&gt; &amp; co</Name>")
                && c.contains("<HeartBeatInterval>30</HeartBeatInterval>")
                && !c.contains("HeartBeatCount"),
            "{c}"
        );
    }

    #[test]
    fn alarms_are_read_whole_or_refused() {
        let xml = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>5</SN>\r\n<DeviceID>34020000001340000001</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-11-25T19:48:12</AlarmTime>\r\n<AlarmDescription>Motion</AlarmDescription>\r\n<Longitude>116.39</Longitude>\r\n<Latitude>39.91</Latitude>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>\r\n</Notify>\r\n";
        let Body::Alarm(a) = parse(xml).unwrap().body else { panic!() };
        assert_eq!((a.priority, a.method, a.alarm_type, a.time.as_str(), a.description.as_str()), (1, 5, Some(2), "2026-11-25T19:48:12", "Motion"));
        assert_eq!((a.longitude, a.latitude), (Some(116.39), Some(39.91)));
        assert_eq!(parse(&xml.replace("<AlarmPriority>1", "<AlarmPriority>9")), Err(ManscdpError::BadAlarm("AlarmPriority must be 1..=4")));
        assert!(matches!(parse(&xml.replace("<AlarmTime>2026-11-25T19:48:12</AlarmTime>", "")), Err(ManscdpError::BadAlarm(_))));
        assert!(alarm_response(5, "x", "GB2312").contains("<Result>OK</Result>"));
    }

    #[test]
    fn errors_and_fuzz() {
        assert_eq!(parse("<Foo/>"), Err(ManscdpError::NoRoot));
        assert_eq!(parse("<Notify><SN>1</SN></Notify>"), Err(ManscdpError::MissingCmdType));
        let mut rng = crate::proto::testutil::Rng::new(8);
        for _ in 0..3_000 {
            let d = rng.mutate(CATALOG.as_bytes());
            let _ = parse(&String::from_utf8_lossy(&d));
        }
    }
}
