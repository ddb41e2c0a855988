use super::*;
use crate::catalog::{BindAddrs, Name16};
use crate::rules::{Ctx, OnError, Policy, Rule};
use crate::Value;

fn tcp_client() -> Ctx<'static> {
    Ctx::client(Transport::Tcp, None, None)
}

#[test]
fn plan_records_are_fixed_size_and_small() {
    assert_eq!(core::mem::size_of::<PlanOp>(), 28);
    assert_eq!(core::mem::align_of::<PlanOp>(), 4);
    assert!(core::mem::size_of::<PlanRecord>() <= 12 + 28 * MAX_PLAN_OPS);
}

#[test]
fn stage_masks_follow_the_catalog() {
    let tcp = Transport::Tcp;
    let udp = Transport::Udp;
    assert_ne!(Stage::Connect.mask(tcp) & Opt::BindAddress.bit(), 0);
    assert_eq!(Stage::Listen.mask(tcp) & Opt::BindAddress.bit(), 0);
    assert_eq!(Stage::Connect.mask(tcp) & Opt::ReuseAddr.bit(), 0);
    assert_ne!(Stage::Bind.mask(tcp) & Opt::ReusePort.bit(), 0);
    assert_eq!(Stage::Bind.mask(tcp) & Opt::Tos.bit(), 0);
    assert_ne!(Stage::Bind.mask(udp) & Opt::Tos.bit(), 0);
    for st in Stage::ALL {
        assert_eq!(st.mask(udp) & Opt::NoDelay.bit(), 0, "{st:?}");
        assert_eq!(st.mask(tcp) & Opt::Mptcp.bit(), 0, "{st:?}");
    }
    assert_eq!(INHERITED & Opt::Priority.bit(), 0);
    assert_ne!(INHERITED & Opt::Tos.bit(), 0);
}

/// DSCP with priority on the three kinds of socket: the exact calls, in order.
#[test]
fn dscp_plan_per_variant() {
    let mut r = Rule::new("r");
    r.set(Opt::Priority, Value::Int(5), false);
    r.set(Opt::Tos, Value::Int(0xb8), true);
    let p = Policy::new(vec![r], OnError::Warn);
    let d = p.decide(&tcp_client());
    let names = |v| {
        d.plan(Stage::Connect, Transport::Tcp, v, 0)
            .ops()
            .map(|o| (o.cname(), o.is_extra()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(Variant::V4),
        vec![("IP_TOS", false), ("SO_PRIORITY", false)]
    );
    assert_eq!(
        names(Variant::V6),
        vec![("IPV6_TCLASS", false), ("SO_PRIORITY", false)]
    );
    assert_eq!(
        names(Variant::V6Dual),
        vec![
            ("IPV6_TCLASS", false),
            ("IP_TOS", true),
            ("SO_PRIORITY", false)
        ]
    );
    let plan = d
        .plan(Stage::Connect, Transport::Tcp, Variant::V4, 0)
        .record();
    assert_eq!(plan.lock, Opt::Priority.bit(), "dscp is soft");
    assert_eq!(plan.slots, Opt::Priority.bit() | Opt::Tos.bit());
    let skipped = d
        .plan(Stage::Connect, Transport::Tcp, Variant::V4, Opt::Tos.bit())
        .record();
    assert_eq!(skipped.len, 1);
}

#[test]
fn bind_entries_per_variant() {
    let mut r = Rule::new("r");
    let addrs = BindAddrs {
        v4: Some([10, 0, 0, 5]),
        v6: None,
    };
    r.set(Opt::BindAddress, Value::Addrs(addrs), false);
    r.set(
        Opt::BindInterface,
        Value::Name(Name16::new("lo").expect("valid")),
        false,
    );
    let p = Policy::new(vec![r], OnError::Warn);
    let d = p.decide(&tcp_client());
    let v4 = d
        .plan(Stage::Connect, Transport::Tcp, Variant::V4, 0)
        .record();
    assert_eq!(v4.len, 2);
    assert_eq!(v4.ops()[1].level, LEVEL_BIND);
    assert_eq!(v4.ops()[1].bytes(), &[10, 0, 0, 5]);
    let dual = d
        .plan(Stage::Connect, Transport::Tcp, Variant::V6Dual, 0)
        .record();
    assert_eq!(
        dual.ops()[1].bytes(),
        &core::net::Ipv4Addr::new(10, 0, 0, 5)
            .to_ipv6_mapped()
            .octets()
    );
    // No IPv6 source address given: a native IPv6 socket gets no bind.
    let v6 = d
        .plan(Stage::Connect, Transport::Tcp, Variant::V6, 0)
        .record();
    assert_eq!(v6.len, 1);
    assert_eq!(v6.slots, Opt::BindInterface.bit());
    // Listen never binds a source address.
    let l = d
        .plan(Stage::Listen, Transport::Tcp, Variant::V4, 0)
        .record();
    assert!(l.ops().iter().all(|o| !o.is_bind()));
}

#[test]
fn variant_of_socket() {
    assert_eq!(
        Variant::of(Family::V4, Stage::Connect, Some(false)),
        Variant::V4
    );
    assert_eq!(
        Variant::of(Family::V6, Stage::Connect, Some(false)),
        Variant::V6
    );
    assert_eq!(
        Variant::of(Family::V6, Stage::Connect, Some(true)),
        Variant::V6Dual
    );
    assert_eq!(
        Variant::of(Family::V6, Stage::Listen, None),
        Variant::V6Dual
    );
    assert_eq!(
        Variant::of(Family::V6, Stage::Accept, None),
        Variant::V6Dual
    );
}
#[test]
fn what_attach_can_still_change() {
    for o in [
        Opt::Mptcp,
        Opt::BindAddress,
        Opt::BindInterface,
        Opt::MaxSeg,
        Opt::ReuseAddr,
        Opt::ReusePort,
    ] {
        assert!(fixed_once_open(o).is_some(), "{o:?}");
    }
    for o in [
        Opt::Tos,
        Opt::Priority,
        Opt::Ttl,
        Opt::Mark,
        Opt::SndBuf,
        Opt::RcvBuf,
        Opt::MaxPacingRate,
        Opt::Linger,
        Opt::KeepAlive,
        Opt::KeepIdle,
        Opt::KeepIntvl,
        Opt::KeepCnt,
        Opt::NoDelay,
        Opt::UserTimeout,
        Opt::Congestion,
        Opt::NotsentLowat,
    ] {
        assert_eq!(fixed_once_open(o), None, "{o:?}");
    }
    assert_eq!(fixed_once_open_mask() & Opt::Tos.bit(), 0);
    assert_ne!(fixed_once_open_mask() & Opt::MaxSeg.bit(), 0);
}
