#!/usr/bin/env bash
# Builds the Debian package of `mbms` (cargo-deb, metadata in
# crates/mbms-cli/Cargo.toml): the release binary, the man pages generated
# from the clap definitions, the configurations under /etc/mbms and the
# systemd units. Prints the path of the .deb.
#
#   cargo install --locked cargo-deb   # once
#   packaging/deb/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
assets=$target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/etc" "$assets/man"

cargo build --release --locked -p mbms-cli
"$target/release/mbms" man --out-dir "$assets/man" >/dev/null

# /etc/mbms: the examples, with the UE's paths made absolute (its relative
# paths resolve against /etc/mbms; the BSF's and BM-SC's against their
# WorkingDirectory under /var/lib/mbms, see the units).
cp examples/bsf.toml examples/bmsc.toml "$assets/etc/"
sed -e 's|^state_dir = .*|state_dir = "/var/lib/mbms/ue/state"|' \
    -e 's|^services = .*|services = "/etc/mbms/news-service.toml"|' \
    examples/ue.toml >"$assets/etc/ue.toml"
sed -e 's|^input_dir = .*|input_dir = "/var/lib/mbms/ue/download-in"|' \
    -e 's|^output_dir = .*|output_dir = "/var/lib/mbms/ue/download-out"|' \
    -e 's|^sdp = .*|sdp = "/var/lib/mbms/ue/news-live.sdp"|' \
    examples/news-service.toml >"$assets/etc/news-service.toml"
for f in ue.toml news-service.toml; do
    grep -q '/var/lib/mbms' "$assets/etc/$f" || { echo "no absolute path in $f" >&2; exit 1; }
done

cargo deb --no-build --locked -p mbms-cli --output "$target/debian/"
ls -1 "$target"/debian/mbms_*.deb | tail -n 1
