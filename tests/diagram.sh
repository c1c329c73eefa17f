#!/usr/bin/env bash
# `bootstrap diagram` looked at as a person would: every layer of the shipped inventory and of
# the lab's is rendered to SVG, screenshotted to PNG with headless Chromium (Debian's
# `chromium`, installed by .ci/setup), and each PNG must be a real picture (many colours, not
# a blank page) while the SVG names what it must show (every host address, the layer's kinds).
# The lab's inventory: LAB_INVENTORY if given (`tests/lab/lab demo` passes the one `lab up`
# wrote), else the product's inventory with the lab machines' addresses, which is what `lab up`
# writes minus keys and lab URLs (a file left by another checkout's lab may be stale: not used).
# Usage: tests/diagram.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BOOTSTRAP_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/bootstrap}"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
command -v chromium >/dev/null || { echo "diagram: chromium is not installed (.ci/setup installs it)" >&2; exit 1; }

lab_inventory() {
  if [ -n "${LAB_INVENTORY:-}" ]; then
    cp "$LAB_INVENTORY" "$out/lab/inventory.toml"
    return
  fi
  # shellcheck source=lab/lib.sh
  ( source tests/lab/lib.sh
    args=()
    for m in "${PLATFORM_MACHINES[@]}"; do
      old="$(awk -v h="[hosts.$m]" '$0 == h { f = 1; next } f && $1 == "address" { gsub(/"/, "", $3); print $3; exit }' inventory.toml)"
      args+=(-e "s/\"$old\"/\"${MACHINE_IP[$m]}\"/")
    done
    sed "${args[@]}" inventory.toml >"$out/lab/inventory.toml" )
}

# A PNG's distinct pixel colours (a tiny reader: 8-bit RGB/RGBA, non-interlaced, as Chromium
# writes them).
count_colours() {
  python3 - "$1" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp
prev, colours, i = bytearray(stride), set(), 0
for _ in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp))
    prev = line
print(len(colours))
PY
}

fail=0
check() { echo "diagram: $1" >&2; fail=1; }

mkdir -p "$out/shipped" "$out/lab"
cp inventory.toml "$out/shipped/inventory.toml"
lab_inventory
for name in shipped lab; do
  inv="$out/$name/inventory.toml"
  "$BIN" -i "$inv" --playbooks playbooks diagram -o "$out/$name/" >/dev/null
  for n in 1 2 3; do
    svg="$out/$name/architecture-layer$n.svg"
    png="$out/$name/architecture-layer$n.png"
    w="$(grep -o 'width="[0-9]*"' "$svg" | head -1 | tr -dc 0-9)"
    h="$(grep -o 'height="[0-9]*"' "$svg" | head -1 | tr -dc 0-9)"
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --user-data-dir="$(mktemp -d)" --screenshot="$png" --window-size="$w,$h" \
      "file://$(realpath "$svg")" >/dev/null 2>&1 || true
    [ -s "$png" ] || { check "$name layer $n: no PNG"; continue; }
    colours="$(count_colours "$png")"
    # Text, boxes of several tones and coloured arrows: hundreds of colours once antialiased.
    [ "$colours" -ge 50 ] || check "$name layer $n: $png looks blank ($colours colours)"
    for addr in $(awk '$1 == "address" { gsub(/"/, "", $3); print $3 }' "$inv"); do
      grep -q ">[^<]*$addr" "$svg" || check "$name layer $n: $addr not shown"
    done
    case $n in
      1) want=("kube-apiserver" "ufw: incoming deny" "legend") ;;
      2) want=("namespace " "Ingress " "Service " "legend") ;;
      3) want=("ConfigMap " "Secret " "pod fluent-bit on" "legend") ;;
    esac
    for label in "${want[@]}"; do
      grep -qF ">$label" "$svg" || check "$name layer $n: no \"$label\" label"
    done
    echo "diagram: $name layer $n: $png (${w}x${h}, $colours colours)"
  done
done
exit "$fail"
