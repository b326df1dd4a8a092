#!/bin/sh
# Portable LiverPlan: add (or, after moving this folder, update) a menu entry for the current user that
# starts LiverPlan from where this folder now is. Nothing outside ~/.local is written; no root needed.
set -e
here=$(cd "$(dirname "$0")" && pwd)
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
mkdir -p "$apps" "$icons"
cp "$here/liverplan.png" "$icons/liverplan.png"
sed -e "s#^Exec=.*#Exec=\"$here/liverplan\" %f#" "$here/share/liverplan.desktop" > "$apps/liverplan.desktop.tmp"
mv "$apps/liverplan.desktop.tmp" "$apps/liverplan.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" || true
echo "LiverPlan added to your applications menu (starts $here/liverplan)."
