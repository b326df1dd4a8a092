#!/usr/bin/env bash
# LiverPlan for macOS (Apple silicon): LiverPlan.app and a .dmg. NOT built on the project's Linux machines;
# built and self-tested by .github/workflows/installers.yml on a macos-14 (arm64) runner.
#
#   installer/macos/build_macos.sh [PYTHON]
#
# torch on macOS has no CUDA: segmentation uses the Apple GPU (MPS) when available, else the CPU
# (engine.inference.device picks it). The .app is signed ad hoc ("-"): Gatekeeper asks once (right-click >
# Open); a notarised build needs the project's Developer ID (set CODESIGN_IDENTITY), which CI does not hold.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${1:-python3}
cd "$ROOT"
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)
[ "$(uname -m)" = "arm64" ] || echo "warning: building on $(uname -m); the release .app is for Apple silicon (arm64)" >&2
rm -rf build/installer dist/LiverPlan.app dist/LiverPlan-*.dmg
"$PY" -m PyInstaller --noconfirm --log-level WARN --distpath build/installer/bundle --workpath build/installer/work \
  installer/liverplan.spec
APP=build/installer/bundle/LiverPlan.app
test -d "$APP" || { echo "build_macos.sh: PyInstaller made no LiverPlan.app" >&2; exit 1; }
codesign --force --deep --sign "${CODESIGN_IDENTITY:--}" "$APP"
# the self-test of the frozen app, inside the .app (the same executable the Finder starts)
"$APP/Contents/MacOS/liverplan" --self-test
mkdir -p dist build/installer/dmg
cp -R "$APP" build/installer/dmg/
ln -s /Applications build/installer/dmg/Applications
hdiutil create -volname "LiverPlan $VERSION" -srcfolder build/installer/dmg -fs HFS+ -format UDZO -ov \
  "dist/LiverPlan-$VERSION-macos-arm64.dmg"
du -sh "$APP" "dist/LiverPlan-$VERSION-macos-arm64.dmg"
