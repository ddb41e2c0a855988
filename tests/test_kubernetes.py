"""docs/kubernetes/: the DaemonSet manifest for `sockwrap agent --runtime cri`, checked offline
(no cluster runs here): against the Kubernetes API schemas (kubernetes-validate --strict),
with a broken copy as the control that shows the validator can fail; its policies pass
`sockwrap check`; the pieces that must agree (the agent's arguments, the policy mount, the
example pod's annotation) agree. The agent itself is tested against the kubelet's cgroup
layouts and recorded CRI answers in test_containers.py."""

import subprocess
from pathlib import Path

import util

MANIFEST = Path(__file__).resolve().parent.parent / "docs" / "kubernetes" / "sockwrap-agent.yaml"
K8S = "1.31.0"


def validate(path):
    return subprocess.run([util.PY, "-m", "kubernetes_validate", "--strict", "-k", K8S, str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


def docs():
    import yaml
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_passes_the_kubernetes_schemas_and_a_broken_copy_does_not(tmp_path):
    util.require(subprocess.run([util.PY, "-c", "import kubernetes_validate"], timeout=60).returncode == 0,
                 "kubernetes-validate not installed (scripts/setup.sh test)")
    r = validate(MANIFEST)
    assert r.returncode == 0, r.stdout
    kinds = {d["kind"] for d in docs()}
    assert {"Namespace", "ConfigMap", "DaemonSet", "Pod"} <= kinds, kinds
    for kind in ("daemonset/sockwrap-agent", "configmap/sockwrap-policies"):
        assert f"passed for resource {kind}" in r.stdout, r.stdout
    # Control: a field the DaemonSet schema does not have.
    broken = tmp_path / "broken.yaml"
    broken.write_text(MANIFEST.read_text().replace("      hostPID: true", "      hostPID: true\n      hostPid: true", 1))
    r = validate(broken)
    assert r.returncode != 0 and "hostPid" in r.stdout, r.stdout


def test_manifest_policies_pass_check_and_its_pieces_agree(tmp_path):
    util.require_sockwrap()
    ds = next(d for d in docs() if d["kind"] == "DaemonSet")
    cm = next(d for d in docs() if d["kind"] == "ConfigMap")
    pod = next(d for d in docs() if d["kind"] == "Pod")
    spec = ds["spec"]["template"]["spec"]
    agent = spec["containers"][0]
    args = agent["args"]
    assert args[:3] == ["agent", "--runtime", "cri"], args
    policies_dir = args[args.index("--policies") + 1]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert mounts["policies"]["mountPath"] == policies_dir
    assert spec["hostPID"] is True and agent["securityContext"]["privileged"] is True
    assert {m["mountPath"] for m in mounts.values()} >= {"/sys/fs/cgroup", "/sys/fs/bpf"}
    # The agent accepts exactly these arguments (its own parser, not ours).
    r = subprocess.run([str(util.SOCKWRAP_BIN), *args[:1], "--help"], stdout=subprocess.PIPE, text=True, timeout=30)
    assert "--runtime" in r.stdout and "cri" in r.stdout and "--policies" in r.stdout, r.stdout
    # Every policy of the ConfigMap passes sockwrap check; the example pod names one of them.
    files = []
    for key, text in cm["data"].items():
        assert key.endswith(".toml"), key
        f = tmp_path / key
        f.write_text(text)
        files.append(f)
    r = subprocess.run([str(util.SOCKWRAP_BIN), "check", *map(str, files)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    name = pod["metadata"]["annotations"]["sockwrap.io/policy"]
    assert f"{name}.toml" in cm["data"], (name, list(cm["data"]))
    # Control: check does fail on a broken policy.
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\ndscp = "NOPE"\n')
    r = subprocess.run([str(util.SOCKWRAP_BIN), "check", str(bad)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode != 0
