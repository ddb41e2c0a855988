//! Option values: their types ([`Value`], [`Name16`], [`BindAddrs`]), how they are shown,
//! and how they are parsed from the user's text (flags, TOML, environment).

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name16 {
    bytes: [u8; 16],
    len: u8,
}

impl Name16 {
    pub fn new(s: &str) -> Option<Name16> {
        if s.is_empty() || s.len() > 15 || s.bytes().any(|b| b == 0) {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Name16 {
            bytes,
            len: s.len() as u8,
        })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

impl fmt::Debug for Name16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Source addresses: at most one per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BindAddrs {
    pub v4: Option<[u8; 4]>,
    pub v6: Option<[u8; 16]>,
}

/// A parsed option value. `Copy` and allocation-free so the hooks can pass it around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Name(Name16),
    Addrs(BindAddrs),
    /// `None` = linger off.
    Linger(Option<u16>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => f.write_str(if *b { "on" } else { "off" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Name(n) => f.write_str(n.as_str()),
            Value::Addrs(a) => {
                let mut first = true;
                if let Some(v4) = a.v4 {
                    write!(f, "{}", core::net::Ipv4Addr::from(v4))?;
                    first = false;
                }
                if let Some(v6) = a.v6 {
                    if !first {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", core::net::Ipv6Addr::from(v6))?;
                }
                Ok(())
            }
            Value::Linger(None) => f.write_str("off"),
            Value::Linger(Some(s)) => write!(f, "{s}s"),
        }
    }
}

/// Formats a value the way a user reads it for this slot (`0xb8 (DSCP EF)` for ToS).
pub struct Shown(pub Opt, pub Value);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Opt::Tos, Value::Int(tos)) => {
                let dscp = (tos >> 2) as u8;
                match dscp_name(dscp) {
                    Some(n) => write!(f, "{n}(0x{tos:02x})"),
                    None => write!(f, "{dscp}(0x{tos:02x})"),
                }
            }
            (Opt::Mark, Value::Int(m)) => write!(f, "0x{m:x}"),
            (_, v) => write!(f, "{v}"),
        }
    }
}

pub(super) const DSCP_NAMES: [(&str, u8); 23] = [
    ("CS0", 0),
    ("LE", 1),
    ("CS1", 8),
    ("AF11", 10),
    ("AF12", 12),
    ("AF13", 14),
    ("CS2", 16),
    ("AF21", 18),
    ("AF22", 20),
    ("AF23", 22),
    ("CS3", 24),
    ("AF31", 26),
    ("AF32", 28),
    ("AF33", 30),
    ("CS4", 32),
    ("AF41", 34),
    ("AF42", 36),
    ("AF43", 38),
    ("CS5", 40),
    ("VA", 44),
    ("EF", 46),
    ("CS6", 48),
    ("CS7", 56),
];

/// Every DSCP class name [`parse_dscp`] takes, in code point order (shell completion
/// offers them).
pub fn dscp_names() -> impl Iterator<Item = &'static str> {
    DSCP_NAMES.iter().map(|(n, _)| *n)
}

/// The usual name of a DSCP code point, if it has one.
pub fn dscp_name(dscp: u8) -> Option<&'static str> {
    DSCP_NAMES.iter().find(|(_, v)| *v == dscp).map(|(n, _)| *n)
}

/// A raw value as the user wrote it: TOML gives typed scalars, the CLI and the environment
/// give strings.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

pub(super) fn parse_int_text(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

pub(super) fn parse_bool_text(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Splits `123kbit` into (`123`, `kbit`). Hex numbers (`0x..`) take no suffix.
pub(super) fn split_suffix(s: &str) -> (&str, &str) {
    let s = s.trim();
    if s.starts_with("0x") || s.starts_with("0X") {
        return (s, "");
    }
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

pub(super) fn scaled(s: &str, unit: Unit) -> Option<i64> {
    if unit == Unit::None {
        return parse_int_text(s);
    }
    let (num, suf) = split_suffix(s);
    let n = parse_int_text(num)?;
    // Lower-cased on the stack: no suffix is longer than four bytes, and a longer one
    // matches none of them.
    let mut low = [0u8; 4];
    let suf = match low.get_mut(..suf.len()) {
        Some(d) => {
            d.copy_from_slice(suf.as_bytes());
            d.make_ascii_lowercase();
            core::str::from_utf8(d).ok()?
        }
        None => return None,
    };
    let mult: i64 = match (unit, suf) {
        (_, "") => 1,
        (Unit::Bytes | Unit::Rate, "k" | "kb" | "kib") => 1 << 10,
        (Unit::Bytes | Unit::Rate, "m" | "mb" | "mib") => 1 << 20,
        (Unit::Bytes | Unit::Rate, "g" | "gb" | "gib") => 1 << 30,
        (Unit::Rate, "bit") => return Some(n / 8),
        (Unit::Rate, "kbit") => return Some(n * 1000 / 8),
        (Unit::Rate, "mbit") => return Some(n * 1_000_000 / 8),
        (Unit::Rate, "gbit") => return n.checked_mul(1_000_000_000).map(|v| v / 8),
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Why a text is not a duration of some unit (see [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not a number with one of the duration units.
    NotADuration,
    /// A duration, but not a whole number of the unit asked for (`1.5s` in seconds).
    NotWhole,
}

/// The one duration grammar, for every duration in the policy, the flags and the
/// environment (`delay`, `user-timeout`, `keepalive.idle`, `linger`, ...): a decimal
/// number, then an optional unit `ms`, `s`, `m` or `min`, `h` (any case), as in `250ms`,
/// `1.5s`, `2m`, `1min`, `1h`. A bare number counts in the caller's unit, `base_ms`
/// milliseconds long (1 for milliseconds, 1000 for seconds). Returns the duration in that
/// unit (saturating), or why not.
pub fn parse_duration(s: &str, base_ms: u64) -> Result<u64, DurationError> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..end], t[end..].trim());
    // Lower-cased on the stack (this runs in the library too): no unit is longer than 3.
    let mut low = [0u8; 3];
    let unit = match low.get_mut(..unit.len()) {
        Some(d) => {
            d.copy_from_slice(unit.as_bytes());
            d.make_ascii_lowercase();
            core::str::from_utf8(d).map_err(|_| DurationError::NotADuration)?
        }
        None => return Err(DurationError::NotADuration),
    };
    let unit_ms: u64 = match unit {
        "" => base_ms,
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::NotADuration),
    };
    // Thousandths of the unit given, so that `1.5s` and `0.25m` are exact. u64 on purpose
    // (128-bit division would bring its runtime routines into the library): a product too
    // large for it is far out of every option's range, and saturates.
    let milli = decimal_scaled(num, 3).ok_or(DurationError::NotADuration)?;
    let Some(thousandths_ms) = milli.checked_mul(unit_ms) else {
        return Ok(u64::MAX);
    };
    let per = base_ms.max(1).saturating_mul(1000);
    if !thousandths_ms.is_multiple_of(per) {
        return Err(DurationError::NotWhole);
    }
    Ok(thousandths_ms / per)
}

/// How long one unit of a duration-valued option is, in milliseconds.
pub(super) fn duration_base_ms(unit: Unit) -> Option<u64> {
    match unit {
        Unit::Millis => Some(1),
        Unit::Seconds => Some(1000),
        _ => None,
    }
}

/// A user's text for an option of `unit`: a plain number (also hex or negative, which the
/// range check then refuses by value), or for time units any [`parse_duration`] duration.
pub(super) fn number_in(s: &str, unit: Unit) -> Option<i64> {
    match duration_base_ms(unit) {
        Some(base) => parse_int_text(s).or_else(|| {
            parse_duration(s, base)
                .ok()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        }),
        None => scaled(s, unit),
    }
}

/// The error for a text that [`number_in`] refused: "not a whole number of seconds" for a
/// duration finer than the unit, else `fallback`.
pub(super) fn not_a_number(name: &str, s: &str, unit: Unit, fallback: String) -> String {
    match duration_base_ms(unit).map(|b| parse_duration(s, b)) {
        Some(Err(DurationError::NotWhole)) => format!(
            "{name}: `{}` is not a whole number of {}",
            s.trim(),
            if unit == Unit::Millis {
                "milliseconds"
            } else {
                "seconds"
            }
        ),
        _ => fallback,
    }
}

pub(super) fn unit_hint(unit: Unit) -> &'static str {
    match unit {
        Unit::None => "",
        Unit::Bytes => " (bytes; K/M/G suffixes allowed)",
        Unit::Millis => " (milliseconds, or a duration: 250ms, 1.5s, 2m, 1h)",
        Unit::Seconds => " (seconds, or a duration: 30s, 1.5m, 2h)",
        Unit::Rate => " (bytes/s with K/M/G, or bits/s with kbit/mbit/gbit)",
    }
}

/// Parses a DSCP spelling: a name (EF, AF41, CS6, LE, VA, also DF/BE for 0) or 0..63
/// (decimal or 0x hex). Returns the DSCP code point, not the ToS byte.
pub fn parse_dscp(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let up = t.to_ascii_uppercase();
    if let Some((_, v)) = DSCP_NAMES.iter().find(|(n, _)| *n == up) {
        return Ok(*v);
    }
    if up == "DF" || up == "BE" || up == "DEFAULT" {
        return Ok(0);
    }
    match parse_int_text(t) {
        Some(n) if (0..=63).contains(&n) => Ok(n as u8),
        Some(n) => Err(format!("DSCP {n} is out of range: expected 0..63 (the ToS byte is DSCP << 2; use `tos` for a raw byte)")),
        None => Err(format!(
            "`{t}` is not a DSCP: expected EF, AF11..AF43, CS0..CS7, LE, VA or a number 0..63"
        )),
    }
}

/// Parses a user's value for `opt`. `name_used` is how the user spelled the option (so `tos`
/// parses a raw byte while `dscp` parses a code point). Errors are one line, ready to print
/// after the source location.
pub fn parse_value(opt: Opt, name_used: &str, raw: Raw<'_>) -> Result<Value, String> {
    let spec = opt.spec();
    let name = spec.name;
    match spec.kind {
        Kind::Dscp => {
            let is_tos = name_used.eq_ignore_ascii_case("tos");
            if is_tos {
                let n = match raw {
                    Raw::Int(n) => Some(n),
                    Raw::Str(s) => parse_int_text(s),
                    Raw::Bool(_) => None,
                };
                match n {
                    Some(n) if (0..=255).contains(&n) => Ok(Value::Int(n)),
                    _ => Err(format!(
                        "tos: expected a ToS byte 0..255 (e.g. 0xb8), got {}",
                        show_raw(raw)
                    )),
                }
            } else {
                let d = match raw {
                    Raw::Int(n) if (0..=63).contains(&n) => n as u8,
                    Raw::Int(n) => {
                        return Err(format!(
                            "dscp: {n} is out of range: expected 0..63 or a name like EF"
                        ))
                    }
                    Raw::Str(s) => parse_dscp(s).map_err(|e| format!("dscp: {e}"))?,
                    Raw::Bool(_) => {
                        return Err("dscp: expected a DSCP name or number, got a boolean".into())
                    }
                };
                Ok(Value::Int((d as i64) << 2))
            }
        }
        Kind::Bool => {
            let b = match raw {
                Raw::Bool(b) => Some(b),
                Raw::Int(0) => Some(false),
                Raw::Int(1) => Some(true),
                Raw::Int(_) => None,
                Raw::Str(s) => parse_bool_text(s),
            };
            b.map(Value::Bool).ok_or_else(|| {
                format!(
                    "{name}: expected on/off (true/false, yes/no, 1/0), got {}",
                    show_raw(raw)
                )
            })
        }
        Kind::Int { min, max, unit } => {
            let n = match raw {
                Raw::Int(n) => Some(n),
                Raw::Str(s) => number_in(s, unit),
                Raw::Bool(_) => None,
            };
            match (n, raw) {
                (Some(n), _) if n >= min && n <= max => Ok(Value::Int(n)),
                (Some(n), _) => Err(format!(
                    "{name}: {n} is out of range: expected {min}..{max}{}",
                    unit_hint(unit)
                )),
                (None, Raw::Str(s)) => Err(not_a_number(
                    name,
                    s,
                    unit,
                    format!(
                        "{name}: expected a number{}, got {}",
                        unit_hint(unit),
                        show_raw(raw)
                    ),
                )),
                (None, _) => Err(format!(
                    "{name}: expected a number{}, got {}",
                    unit_hint(unit),
                    show_raw(raw)
                )),
            }
        }
        Kind::Name => {
            let s = match raw {
                Raw::Str(s) => s.trim(),
                _ => {
                    return Err(format!(
                        "{name}: expected a name (a string), got {}",
                        show_raw(raw)
                    ))
                }
            };
            let ok_chars = s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            match Name16::new(s) {
                Some(n) if ok_chars => Ok(Value::Name(n)),
                _ => Err(format!("{name}: `{s}` is not a valid name: expected 1..15 printable characters without `/`")),
            }
        }
        Kind::Addrs => {
            let s = match raw {
                Raw::Str(s) => s,
                _ => {
                    return Err(format!(
                        "{name}: expected an IP address, got {}",
                        show_raw(raw)
                    ))
                }
            };
            let mut a = BindAddrs::default();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<core::net::IpAddr>() {
                    Ok(core::net::IpAddr::V4(v4)) if a.v4.is_none() => a.v4 = Some(v4.octets()),
                    Ok(core::net::IpAddr::V6(v6)) if a.v6.is_none() => match v6.to_ipv4_mapped() {
                        Some(v4) if a.v4.is_none() => a.v4 = Some(v4.octets()),
                        Some(_) => {
                            return Err(format!("{name}: more than one IPv4 address in `{s}`"))
                        }
                        None => a.v6 = Some(v6.octets()),
                    },
                    Ok(_) => {
                        return Err(format!(
                            "{name}: more than one address of the same family in `{s}`"
                        ))
                    }
                    Err(_) => return Err(format!("{name}: `{part}` is not an IP address")),
                }
            }
            if a.v4.is_none() && a.v6.is_none() {
                return Err(format!(
                    "{name}: expected an IP address, got an empty value"
                ));
            }
            Ok(Value::Addrs(a))
        }
        Kind::Linger => {
            let n = match raw {
                Raw::Bool(false) => return Ok(Value::Linger(None)),
                Raw::Str(s) if parse_bool_text(s) == Some(false) && s.trim() != "0" => {
                    return Ok(Value::Linger(None))
                }
                Raw::Int(n) => Some(n),
                Raw::Str(s) => number_in(s, Unit::Seconds),
                Raw::Bool(true) => None,
            };
            let expected = format!(
                "linger: expected seconds 0..65535 (or a duration: 30s, 2m) or `off`, got {}",
                show_raw(raw)
            );
            match (n, raw) {
                (Some(n), _) if (0..=65535).contains(&n) => Ok(Value::Linger(Some(n as u16))),
                (None, Raw::Str(s)) => Err(not_a_number("linger", s, Unit::Seconds, expected)),
                _ => Err(expected),
            }
        }
    }
}

pub(super) fn show_raw(raw: Raw<'_>) -> String {
    match raw {
        Raw::Str(s) => format!("`{s}`"),
        Raw::Int(n) => format!("{n}"),
        Raw::Bool(b) => format!("{b}"),
    }
}

/// Parses `--keepalive` / `keepalive = "..."`: `on`/`off`, or `IDLE,INTERVAL,COUNT` (any
/// trailing part may be omitted: `30` or `30,10`). Returns the values for the four slots.
pub fn parse_keepalive(s: &str) -> Result<Vec<(Opt, Value)>, String> {
    if let Some(b) = parse_bool_text(s) {
        if !s.trim().chars().all(|c| c.is_ascii_digit()) {
            return Ok(vec![(Opt::KeepAlive, Value::Bool(b))]);
        }
    }
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "keepalive: expected `on`, `off` or IDLE,INTERVAL,COUNT (e.g. 30,10,3), got `{s}`"
        ));
    }
    let mut out = vec![(Opt::KeepAlive, Value::Bool(true))];
    for (slot, p) in [Opt::KeepIdle, Opt::KeepIntvl, Opt::KeepCnt]
        .into_iter()
        .zip(parts)
    {
        let v = parse_value(slot, slot.name(), Raw::Str(p))
            .map_err(|e| format!("keepalive: `{s}`: {e}"))?;
        out.push((slot, v));
    }
    Ok(out)
}

/// A decimal number (`12`, `0.25`, `1.5`) times 10^`digits`, digits beyond that dropped.
/// Integer arithmetic on purpose: core's float parsing and printing are ~30 KiB of code
/// and tables, which every process the library loads into would carry.
pub(crate) fn decimal_scaled(s: &str, digits: u32) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || int.len() > 12
    {
        return None;
    }
    let mut v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f = frac.bytes();
    for _ in 0..digits {
        let d = f.next().map(|b| (b - b'0') as u64).unwrap_or(0);
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(v)
}
