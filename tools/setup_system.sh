#!/usr/bin/env bash
# The system packages the test suite needs, installed when missing (make setup / make test).
#
#   fonts-noto-color-emoji, unicode-data   the emoji image set (bench/emoji_dataset.py)
#   chromium, chromium-driver              the page test drives Debian's chromium (selenium)
#   default-jre-headless                   pycocoevalcap's PTB tokenizer and METEOR run on java
#
# As root (or with passwordless sudo) on a Debian-like system it runs apt-get update + install,
# quietly; otherwise it prints one line with the exact command and leaves the system alone.
# `make demo` needs none of these.
set -euo pipefail

missing=()
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
[ -f /usr/share/unicode/emoji/emoji-test.txt ] || missing+=(unicode-data)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
java -version >/dev/null 2>&1 || missing+=(default-jre-headless)
[ ${#missing[@]} = 0 ] && exit 0

command="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_system: the tests need ${missing[*]} (Debian package names: $command);" \
       "no apt-get here, so install their equivalents by hand" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "setup_system: the tests need system packages; run: sudo sh -c '$command'" >&2
  exit 0
fi
echo "setup_system: installing ${missing[*]}" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
