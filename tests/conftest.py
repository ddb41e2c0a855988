import pytest

import util


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "vm_only: runs only inside the kernel-matrix VMs (scripts/vm-test.sh), where what it "
        "needs exists (podman containers: the build host refuses crun's setrlimit); "
        "scripts/test.sh deselects these on the host and CI runs them in the VMs")


def pytest_runtest_setup(item):
    if item.get_closest_marker("vm_only") and not util.IN_VM:
        util.require(False, "runs inside the kernel-matrix VMs only: scripts/vm-test.sh 6.12 " + item.nodeid)


@pytest.fixture
def procs():
    p = util.Procs()
    yield p
    p.close()


@pytest.fixture
def port():
    return util.free_port()


@pytest.fixture
def port2():
    return util.free_port()


@pytest.fixture
def sockwrap():
    util.require_sockwrap()
    return util.SOCKWRAP_BIN
