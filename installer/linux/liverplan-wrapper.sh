#!/bin/sh
# /usr/bin/liverplan: the installed LiverPlan (desktop app without arguments, headless CLI with a command).
exec /opt/liverplan/liverplan "$@"
