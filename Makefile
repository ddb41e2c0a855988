# sockwrap: build, install, package.
#
#   make                                   build (cargo, release) and generate man pages + completions
#   make install PREFIX=/usr/local DESTDIR=  install (see the layout below)
#   make uninstall PREFIX=/usr/local DESTDIR=
#   make deb                               target/debian/sockwrap_VERSION_ARCH.deb (cargo-deb)
#   make docs                              the user guide (mdBook): target/guide/index.html
#
# Layout under PREFIX (the binary finds the library at ../lib/sockwrap/ from itself, so
# keep bin/ and lib/sockwrap/ together under one PREFIX):
#   bin/sockwrap
#   lib/sockwrap/libsockwrap.so                         unversioned: systemd drop-ins name it
#   share/man/man1/sockwrap.1, sockwrap-*.1, share/man/man5/sockwrap.toml.5
#   share/bash-completion/completions/sockwrap
#   share/zsh/site-functions/_sockwrap
#   share/fish/vendor_completions.d/sockwrap.fish
#   share/doc/sockwrap/examples/*.toml                   example policies

PREFIX  ?= /usr/local
DESTDIR ?=
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/sockwrap
BASHDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHDIR ?= $(PREFIX)/share/fish/vendor_completions.d

CARGO   ?= cargo
INSTALL ?= install
# cargo's own target/ (cargo-deb's asset paths in crates/cli/Cargo.toml name it too)
REL := target/release
GEN := $(REL)/gen

BIN_DIR := $(DESTDIR)$(PREFIX)/bin
LIB_DIR := $(DESTDIR)$(PREFIX)/lib/sockwrap

.PHONY: all build gen install uninstall deb docs clean-gen

all: build gen

build:
	$(CARGO) build --release --workspace

# `make install` after `make` needs no cargo (e.g. under sudo): build only what is missing.
$(REL)/sockwrap $(REL)/libsockwrap.so:
	$(CARGO) build --release --workspace

gen: $(REL)/sockwrap
	rm -rf $(GEN)
	$(REL)/sockwrap gen-man $(GEN)/man
	$(REL)/sockwrap gen-completions $(GEN)/completions

install: $(REL)/sockwrap $(REL)/libsockwrap.so gen
	$(INSTALL) -d $(BIN_DIR) $(LIB_DIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(BASHDIR) $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR) $(DESTDIR)$(DOCDIR)/examples
	$(INSTALL) -m 755 $(REL)/sockwrap $(BIN_DIR)/sockwrap
	$(INSTALL) -m 644 $(REL)/libsockwrap.so $(LIB_DIR)/libsockwrap.so
	$(INSTALL) -m 644 $(GEN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 $(GEN)/man/sockwrap.toml.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 644 $(GEN)/completions/sockwrap.bash $(DESTDIR)$(BASHDIR)/sockwrap
	$(INSTALL) -m 644 $(GEN)/completions/_sockwrap $(DESTDIR)$(ZSHDIR)/_sockwrap
	$(INSTALL) -m 644 $(GEN)/completions/sockwrap.fish $(DESTDIR)$(FISHDIR)/sockwrap.fish
	$(INSTALL) -m 644 docs/example-policy.toml docs/examples/*.toml $(DESTDIR)$(DOCDIR)/examples/

# Removes exactly what `install` put there, and the directories it made that are empty now.
uninstall:
	rm -f $(BIN_DIR)/sockwrap $(LIB_DIR)/libsockwrap.so
	rm -f $(DESTDIR)$(MANDIR)/man1/sockwrap.1 $(DESTDIR)$(MANDIR)/man1/sockwrap-*.1 \
		$(DESTDIR)$(MANDIR)/man5/sockwrap.toml.5
	rm -f $(DESTDIR)$(BASHDIR)/sockwrap $(DESTDIR)$(ZSHDIR)/_sockwrap $(DESTDIR)$(FISHDIR)/sockwrap.fish
	rm -f $(DESTDIR)$(DOCDIR)/examples/example-policy.toml $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(wildcard docs/examples/*.toml)))
	-rmdir $(LIB_DIR) $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null

# The Debian package: cargo-deb (`cargo install cargo-deb`) packs the release build and the
# generated files named in crates/cli/Cargo.toml [package.metadata.deb].
deb: build gen
	@command -v cargo-deb >/dev/null || { echo "make deb: cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
	$(CARGO) deb -p sockwrap-cli --no-build --output target/debian/

# The user guide, docs/guide (book.toml puts it in target/guide). mdbook: `scripts/setup.sh docs`.
docs:
	@command -v mdbook >/dev/null || { echo "make docs: mdbook is missing: scripts/setup.sh docs (cargo install mdbook)" >&2; exit 1; }
	mdbook build docs/guide

clean-gen:
	rm -rf $(GEN)
