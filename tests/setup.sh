#!/usr/bin/env bash
# What the tests need beyond `pip install -e ".[dev]"`, installed once (about 2 minutes and 7 GB):
#  - Debian's openssh-server (a real sshd on 127.0.0.1), chromium (the MLflow UI test) and postgresql (the team
#    server's database; the tests run throw-away clusters with its initdb and pg_ctl, never Debian's own cluster)
#    and faketime (libfaketime: a sweep whose device clock is hours off);
#  - the Jetsons' stock Python stacks as virtual environments under ~/.cache/trt-bench-tests:
#      py36: Python 3.6 + torch 1.10.0, torchvision 0.11.1, onnx 1.11.0, onnxruntime 1.10.0 (JetPack 4.6, the Nano)
#      py38: Python 3.8 + torch 2.1, torchvision 0.16 (JetPack 5.1, a Xavier)
#    six goes into py36 as JetPack's python3-six would: onnxruntime 1.10's quantization tool imports it.
set -euo pipefail
ENVS="${TRT_BENCH_TEST_ENVS:-$HOME/.cache/trt-bench-tests}"

if ! [ -x /usr/sbin/sshd ] || ! command -v chromium > /dev/null || ! compgen -G "/usr/lib/postgresql/*/bin/initdb" \
        > /dev/null || ! command -v psql > /dev/null || ! command -v faketime > /dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server chromium postgresql faketime > /dev/null
    else
        echo "tests/setup.sh: install Debian's openssh-server, chromium, postgresql and faketime (as root), then run" \
             "this again" >&2
        exit 1
    fi
fi

interpreter() {  # a CPython of version $1 (pyenv's, or one on PATH)
    local found
    found="$(pyenv root 2> /dev/null)/versions/$1/bin/python"
    [ -x "$found" ] && { echo "$found"; return; }
    command -v "python${1%.*}" || { echo "tests/setup.sh: no Python $1 (pyenv install $1)" >&2; exit 1; }
}

environment() {  # environment NAME PYTHON_VERSION PIP_SPEC PACKAGES...
    local name=$1 version=$2 pip=$3
    shift 3
    if [ -f "$ENVS/$name/.complete" ]; then return; fi
    echo "tests/setup.sh: building $ENVS/$name (Python $version: $*)"
    rm -rf "${ENVS:?}/$name"
    "$(interpreter "$version")" -m venv "$ENVS/$name"
    "$ENVS/$name/bin/python" -m pip install -q --disable-pip-version-check -U "$pip"
    "$ENVS/$name/bin/python" -m pip install -q --disable-pip-version-check "$@"
    touch "$ENVS/$name/.complete"
}

mkdir -p "$ENVS"
environment py36 3.6.15 'pip<22' torch==1.10.0 torchvision==0.11.1 onnx==1.11.0 onnxruntime==1.10.0 six
environment py38 3.8.18 'pip<25' 'torch==2.1.*' 'torchvision==0.16.*' onnx==1.17.0 onnxruntime==1.19.2
echo "tests/setup.sh: ready (environments in $ENVS)"
