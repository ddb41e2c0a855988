//! Tests of `containers`.

use super::*;

const ID: &str = "3f2a9c1d5e7b8a0f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b";

fn dirs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn containers_are_found_in_each_runtimes_layout() {
    for (layout, want) in [
        (format!("system.slice/docker-{ID}.scope"), None),
        (format!("machine.slice/libpod-{ID}.scope"), None),
        (format!("machine.slice/libpod-{ID}.scope/container"), Some(format!("machine.slice/libpod-{ID}.scope"))),
        (format!("libpod_parent/libpod-{ID}"), None),
        (format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice/cri-containerd-{ID}.scope"), None),
        (format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_ab.slice/crio-{ID}.scope"), None),
        (format!("kubepods/burstable/pod1234-ab/{ID}"), None),
    ] {
        let mut all = ancestors(&layout);
        all.push("system.slice/docker-0000000000000000000000000000000000000000000000000000000000000000.scope".into());
        let want = want.unwrap_or_else(|| layout.clone());
        assert_eq!(find_container(&all, ID), vec![want.clone()], "{layout}");
        assert_eq!(find_container(&all, &ID[..12]), vec![want], "{layout} by prefix");
    }
    let all = dirs(&[&format!("system.slice/docker-{ID}.scope")]);
    assert!(
        find_container(&all, &ID[..11]).is_empty(),
        "too short a prefix"
    );
    assert!(find_container(&all, "not-hex-at-all-zz").is_empty());
    assert!(find_container(&dirs(&["system.slice/sshd.service"]), ID).is_empty());
}

#[test]
fn pods_are_found_for_both_kubelet_drivers_and_every_qos_class() {
    let uid = "8d3c6a52-1f3e-4b7a-9c1d-2e3f4a5b6c7d";
    let u = uid.replace('-', "_");
    for layout in [
        format!("kubepods.slice/kubepods-pod{u}.slice"), // Guaranteed
        format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
        format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"),
        format!("kubepods/pod{uid}"), // cgroupfs, Guaranteed
        format!("kubepods/burstable/pod{uid}"),
        format!("kubepods/besteffort/pod{uid}"),
    ] {
        let mut all = ancestors(&layout);
        all.push(format!("{layout}/cri-containerd-{ID}.scope"));
        all.push("kubepods/burstable/pod00000000-0000-0000-0000-000000000000".into());
        assert_eq!(find_pod(&all, uid), vec![layout.clone()], "{layout}");
    }
    // Not under kubepods: not a pod.
    assert!(find_pod(&dirs(&[&format!("user.slice/pod{uid}")]), uid).is_empty());
}

#[test]
fn pin_names_read_back_exactly() {
    for rel in [
        "a/b/c",
        "system.slice/docker-x.scope",
        "odd%2fname/x",
        "%",
        "a%2e.b",
    ] {
        assert_eq!(decode(&encode(rel)), rel);
        assert!(!encode(rel).contains('/') && !encode(rel).contains('.'));
    }
}

#[test]
fn cgroup_paths_are_taken_in_each_form() {
    let m = Path::new("/sys/fs/cgroup");
    assert_eq!(cgroup_rel("/sys/fs/cgroup/a/b", m), "a/b");
    assert_eq!(cgroup_rel("/a/b", m), "a/b");
    assert_eq!(cgroup_rel("a/b/", m), "a/b");
    assert_eq!(cgroup_rel("/", m), "");
}
