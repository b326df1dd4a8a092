#!/usr/bin/env bash
# Build the Linux installers from a frozen bundle: a Debian package and a portable tar.zst.
#
#   installer/linux/build_linux.sh BUNDLE_DIR OUT_DIR
#
# BUNDLE_DIR is PyInstaller's one-folder output (holding the `liverplan` executable and _internal/).
# Writes OUT_DIR/liverplan_<version>_amd64.deb and OUT_DIR/liverplan-<version>-linux-x86_64.tar.zst and
# prints their sizes. Compression: zstd at a low level with every core (a 5 GB bundle of mostly CUDA
# libraries compresses little more at high levels, and xz took many minutes on 2 cores).
set -euo pipefail
BUNDLE=$(cd "$1" && pwd)
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
ZLEVEL=${LIVERPLAN_ZSTD_LEVEL:-3}
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
ARCH=amd64
test -x "$BUNDLE/liverplan" || { echo "build_linux.sh: no liverplan executable in $BUNDLE" >&2; exit 1; }
# staged beside the bundle (same file system): the bundle is hard-linked into the package tree, not copied
STAGE=$(mktemp -d "$(dirname "$BUNDLE")/liverplan-pkg.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# icons drawn by installer/icon/make_icon.py (Qt renders the SVG; no display needed)
QT_QPA_PLATFORM=offscreen "$PY" "$ROOT/installer/icon/make_icon.py" "$STAGE/icon" >/dev/null

# ---------------------------------------------------------------- Debian package
DEB="$STAGE/deb"
mkdir -p "$DEB/DEBIAN" "$DEB/opt" "$DEB/usr/bin" "$DEB/usr/share/applications" "$DEB/usr/share/mime/packages" \
         "$DEB/usr/share/doc/liverplan" "$DEB/usr/share/icons/hicolor/scalable/apps"
cp -al "$BUNDLE" "$DEB/opt/liverplan" 2>/dev/null || { rm -rf "$DEB/opt/liverplan"; cp -a "$BUNDLE" "$DEB/opt/liverplan"; }
install -m 0755 "$HERE/liverplan-wrapper.sh" "$DEB/usr/bin/liverplan"
install -m 0644 "$HERE/liverplan.desktop" "$DEB/usr/share/applications/liverplan.desktop"
install -m 0644 "$HERE/liverplan-mime.xml" "$DEB/usr/share/mime/packages/liverplan.xml"
install -m 0644 "$STAGE/icon/liverplan.svg" "$DEB/usr/share/icons/hicolor/scalable/apps/liverplan.svg"
for n in 16 24 32 48 64 128 256 512; do
  mkdir -p "$DEB/usr/share/icons/hicolor/${n}x${n}/apps"
  install -m 0644 "$STAGE/icon/liverplan_$n.png" "$DEB/usr/share/icons/hicolor/${n}x${n}/apps/liverplan.png"
done
NOTICES=$(find "$BUNDLE" -maxdepth 2 -name THIRD-PARTY-NOTICES.txt | head -1)
if [ -n "$NOTICES" ]; then install -m 0644 "$NOTICES" "$DEB/usr/share/doc/liverplan/copyright"; fi
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$DEB" | cut -f1)
sed "s/@INSTALLED_KB@/$INSTALLED_KB/" "$HERE/preinst" > "$DEB/DEBIAN/preinst"
install -m 0755 "$HERE/postinst" "$HERE/postrm" "$DEB/DEBIAN/"
chmod 0755 "$DEB/DEBIAN/preinst"
cat > "$DEB/DEBIAN/control" <<CONTROL
Package: liverplan
Version: $VERSION
Architecture: $ARCH
Maintainer: LiverPlan project <liverplan@localhost>
Installed-Size: $INSTALLED_KB
Depends: libc6 (>= 2.28), libgl1, libegl1, libfontconfig1, libxkbcommon0, libxkbcommon-x11-0, libxcb-icccm4, libxcb-keysyms1, libxcb-image0, libxcb-render-util0, libxcb-xinerama0, libxcb-randr0, libxcb-shape0, libxcb-xkb1, libxcb-cursor0, libx11-xcb1, libglib2.0-0, libdbus-1-3
Section: science
Priority: optional
Homepage: https://example.invalid/liverplan
Description: liver, vessel and metastasis segmentation from portal-phase CT
 LiverPlan segments the liver, portal vein, hepatic veins, inferior vena cava and colorectal liver
 metastases from a portal-phase CT with local nnU-Net v2 models (CUDA GPU when present, otherwise the
 processor), shows them in 2D and 3D, measures, corrects and exports them. Everything runs offline.
 Installed under /opt/liverplan; your models and settings live in ~/.local/share/LiverPlan and are kept
 when the package is upgraded or removed.
CONTROL
DEB_FILE="$OUT/liverplan_${VERSION}_${ARCH}.deb"
t0=$(date +%s)
dpkg-deb --root-owner-group -Zzstd -z"$ZLEVEL" --threads-max=0 -b "$DEB" "$DEB_FILE" >/dev/null 2>&1 \
  || dpkg-deb --root-owner-group -Zzstd -z"$ZLEVEL" -b "$DEB" "$DEB_FILE" >/dev/null
echo "deb built in $(( $(date +%s) - t0 )) s"

# ---------------------------------------------------------------- portable archive
NAME="liverplan-$VERSION-linux-x86_64"
PORT="$STAGE/port/$NAME"
mkdir -p "$PORT/share"
mv "$DEB/opt/liverplan"/* "$PORT/"   # the same bundle, moved rather than copied a second time
install -m 0644 "$STAGE/icon/liverplan.png" "$PORT/liverplan.png"
install -m 0644 "$HERE/liverplan.desktop" "$PORT/share/liverplan.desktop"
install -m 0755 "$HERE/add-to-menu.sh" "$PORT/add-to-menu.sh"
cat > "$PORT/README.txt" <<README
LiverPlan $VERSION, portable (Linux x86-64)

Start:        ./liverplan              (the desktop application, on the demo case)
              ./liverplan CT_FILE_OR_DICOM_FOLDER
Command line: ./liverplan --help       (segment, info, measure, export, models ...)
Check:        ./liverplan --self-test
Menu entry:   ./add-to-menu.sh         (for you only; run it again after moving this folder)

This folder can live anywhere (a USB stick, your home folder) and be moved; nothing is installed
elsewhere. Your models and settings are kept in ~/.local/share/LiverPlan. With an NVIDIA GPU and its
driver, segmentation uses the GPU; without, it runs on the processor.
README
TAR_FILE="$OUT/$NAME.tar.zst"
t0=$(date +%s)
tar -C "$STAGE/port" -cf - "$NAME" | zstd -q -T0 -"$ZLEVEL" -o "$TAR_FILE.part" -f
mv "$TAR_FILE.part" "$TAR_FILE"
echo "portable archive built in $(( $(date +%s) - t0 )) s"

echo "LiverPlan $VERSION Linux installers:"
echo "  bundle    $(du -sh "$PORT" | cut -f1)  on disk ($INSTALLED_KB kB installed)"
for f in "$DEB_FILE" "$TAR_FILE"; do
  echo "  $(basename "$f")  $(du -h --apparent-size "$f" | cut -f1)  ($(stat -c %s "$f") bytes)"
done
