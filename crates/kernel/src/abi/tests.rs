//! `abi.h` against its Rust mirror: every constant and every struct, read from the header.

use super::header::{self, layout, Layout};
use super::*;

const ABI_H: &str = include_str!("../bpf/abi.h");

/// The Rust side of every struct of abi.h.
fn mirrors() -> Vec<(&'static str, Layout)> {
    vec![
        (
            "kop",
            layout!(PlanOp {
                level,
                name,
                opt,
                len,
                flags,
                pad,
                val
            }),
        ),
        (
            "kplan",
            layout!(KPlan {
                lock,
                slots,
                len,
                pad,
                ops
            }),
        ),
        (
            "dkey",
            layout!(DKey {
                ipc,
                prog,
                rpc,
                lpc,
                transport,
                stage,
                variant,
                pad
            }),
        ),
        (
            "kaction",
            layout!(KAction {
                deny,
                flags,
                ip6,
                port,
                pad
            }),
        ),
        ("config", layout!(Config { flags, pad })),
        ("optkey", layout!(OptKey { level, name })),
        ("port_classes", layout!(PortClasses { cls })),
        // aya's key keeps its fields private: its size, and the order aya documents
        // (the prefix length, then the data).
        (
            "lpm_key",
            Layout {
                size: std::mem::size_of::<LpmKey>(),
                align: 1,
                fields: vec![("prefixlen".into(), 0, 4), ("addr".into(), 4, 16)],
            },
        ),
    ]
}

#[test]
fn abi_h_and_its_rust_mirror_agree() {
    let h = header::parse(ABI_H).expect("abi.h");
    // The reader found what is there (a reader that finds nothing agrees with anything).
    assert!(h.defines.len() >= 30 && h.structs.len() == 8, "{h:?}");
    let diff = header::differences(&h, CONSTANTS, &mirrors());
    assert!(
        diff.is_empty(),
        "src/bpf/abi.h and src/abi/mod.rs differ:\n  {}",
        diff.join("\n  ")
    );
}

/// The checks the programs rely on, as the header states them.
#[test]
fn option_slots_fit_below_the_other_counters() {
    let h = header::parse(ABI_H).expect("abi.h");
    assert!(h.defines["N_OPTS"] <= h.defines["C_APPLIED_BASE"]);
    assert_eq!(
        h.defines["N_OPTS"],
        sockwrap_policy::catalog::N_OPTS as i128
    );
}
