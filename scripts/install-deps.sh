#!/bin/bash
# install-deps.sh - installs, from Debian 12's packages, everything cairn
# needs to build, run and test. Idempotent and quiet when all is present.
set -euo pipefail

packages=(
    build-essential cmake pkg-config clang libclang-rt-14-dev
    libzmq3-dev libsqlite3-dev sqlite3 zlib1g-dev libdeflate-dev
    libprotobuf-c-dev protobuf-c-compiler libssl-dev openssl libsasl2-dev
    libsasl2-modules sasl2-bin python3 procps iproute2
    cyrus-imapd cyrus-common cyrus-replication cyrus-clients cyrus-admin
    libmicrohttpd-dev prometheus
    libsystemd-dev man-db groff-base lintian fakeroot dpkg-dev
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
# Debian postinst scripts must not start the Cyrus services here: the tests
# start their own instances on free loopback ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$created_policy" -eq 1 ] && rm -f "$policy"
exit 0
