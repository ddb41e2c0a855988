import pytest

import util


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
