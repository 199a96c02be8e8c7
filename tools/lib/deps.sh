# tools/lib/deps.sh: installs the Debian packages Rigbox needs to build, test and run (sourced).
# Only missing packages are installed; `apt-get update` runs once, and only when something is missing.

RB_DEBS=(build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
    libh2o-evloop-dev libcurl4-openssl-dev libpq-dev libjsmn-dev libyaml-dev libssl-dev libwslay-dev libmimalloc-dev
    postgresql curl jq nodejs npm
    qemu-system-x86 qemu-utils busybox-static)

rb_deps_install() {
    local missing=() p
    for p in "${RB_DEBS[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # node and npm may come from outside Debian (e.g. nodesource): accept working binaries.
    if command -v node >/dev/null && command -v npm >/dev/null; then
        local filtered=()
        for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
        missing=("${filtered[@]}")
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "==> installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "tools: need root (or sudo) to install: ${missing[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
