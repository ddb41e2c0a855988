//! From a value to the `setsockopt` calls that set it ([`kernel_ops`]), encoded as the
//! kernel reads them.

use super::*;

/// A kernel option to set: `setsockopt(fd, level, name, buf[..len])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOp {
    pub level: i32,
    pub name: i32,
    /// C name, for logs.
    pub cname: &'static str,
    pub buf: [u8; 16],
    pub len: u8,
    /// An IPv4 header option on an AF_INET6 socket: its refusal is not a failure.
    pub extra: bool,
}

impl KernelOp {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// The socket a decision is applied to, as far as the catalog cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Up to two kernel operations (the most any option has), no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    ops: [Option<KernelOp>; 2],
}

impl Opt {
    /// Whether `v` is of the kind this option takes (for values that did not come from
    /// [`parse_value`], such as the compiled policy form).
    pub fn accepts(self, v: &Value) -> bool {
        match (self.spec().kind, v) {
            (Kind::Dscp, Value::Int(t)) => (0..=255).contains(t),
            (Kind::Int { min, max, .. }, Value::Int(i)) => (min..=max).contains(i),
            (Kind::Bool, Value::Bool(_))
            | (Kind::Name, Value::Name(_))
            | (Kind::Addrs, Value::Addrs(_))
            | (Kind::Linger, Value::Linger(_)) => true,
            _ => false,
        }
    }
}

impl Ops {
    pub const EMPTY: Ops = Ops { ops: [None; 2] };
    fn push(&mut self, op: KernelOp) {
        if let Some(slot) = self.ops.iter_mut().find(|o| o.is_none()) {
            *slot = Some(op);
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = &KernelOp> {
        self.ops.iter().flatten()
    }
}

/// The bytes `setsockopt` takes for `value` in encoding `enc`; `None` when the value is
/// not of a kind the encoding takes.
pub fn encode(enc: Enc, value: Value) -> Option<([u8; 16], u8)> {
    let mut buf = [0u8; 16];
    let int = |buf: &mut [u8; 16], v: i32| {
        buf[..4].copy_from_slice(&v.to_ne_bytes());
        4u8
    };
    let clamp = |v: i64| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    let len = match (enc, value) {
        (Enc::Int | Enc::BufSize, Value::Int(v)) => int(&mut buf, clamp(v)),
        // The bit pattern of the u32 in an int.
        (Enc::U32, Value::Int(v)) => int(&mut buf, v as u32 as i32),
        (Enc::Bool, Value::Bool(b)) => int(&mut buf, b as i32),
        (Enc::Str | Enc::StrNul, Value::Name(n)) => {
            let b = n.as_bytes();
            buf[..b.len()].copy_from_slice(b);
            b.len() as u8 + u8::from(enc == Enc::StrNul)
        }
        (Enc::Linger, Value::Linger(l)) => {
            let (on, secs) = match l {
                Some(s) => (1i32, s as i32),
                None => (0, 0),
            };
            buf[..4].copy_from_slice(&on.to_ne_bytes());
            buf[4..8].copy_from_slice(&secs.to_ne_bytes());
            8
        }
        _ => return None,
    };
    Some((buf, len))
}

/// The `setsockopt` calls that give `opt = value` to a socket of `family`, from the
/// catalog's [`OptSpec::ops`]. `maybe_v4` says an AF_INET6 socket may carry IPv4 (remote
/// is v4-mapped, or unknown as on a dual-stack listener): IPv4 header fields then need the
/// IPv4 option as well. [`Opt::BindAddress`] and [`Opt::Mptcp`] are not socket options and
/// yield nothing here.
pub fn kernel_ops(opt: Opt, value: Value, family: Family, maybe_v4: bool) -> Ops {
    let mut ops = Ops::default();
    for ko in opt.spec().ops {
        let wanted = match ko.family {
            OpFamily::Any => true,
            OpFamily::V6 => family == Family::V6,
            OpFamily::V4Header => family == Family::V4 || maybe_v4,
        };
        if !wanted {
            continue;
        }
        if let Some((buf, len)) = encode(ko.enc, value) {
            ops.push(KernelOp {
                level: ko.level,
                name: ko.name,
                cname: ko.cname,
                buf,
                len,
                extra: family == Family::V6 && ko.family == OpFamily::V4Header,
            });
        }
    }
    ops
}
