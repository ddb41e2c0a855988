#!/usr/bin/env bash
# apt-install.sh WHAT PKG...: installs the Debian packages PKG... quietly, as root with
# apt-get; otherwise says what is missing (WHAT) and leaves the rest to the caller, whose
# next step then fails with its own message. Used by ci-prereqs.sh and test.sh.
set -euo pipefail
what=$1
shift
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing $what: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
else
    echo "warning: missing $what: $* (not root or no apt-get)" >&2
fi
