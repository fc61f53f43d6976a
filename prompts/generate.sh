#!/usr/bin/env bash
# Makes the prompt WAVs (8 kHz, mono, 16-bit PCM) from the texts in prompts/<lang>/*.txt with
# espeak-ng and sox (Debian packages `espeak-ng` and `sox`), plus the record beep.
# The WAVs are committed so a fresh machine needs no TTS; run this again after editing a text.
# Usage: prompts/generate.sh            (from anywhere)
set -euo pipefail
cd "$(dirname "$0")"
command -v espeak-ng >/dev/null || { echo "espeak-ng is not installed" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox is not installed" >&2; exit 1; }

voice_for() { # language directory -> espeak-ng voice
  case "$1" in
    zh-CN) echo cmn ;;
    en) echo en ;;
    *) echo "no voice for language $1" >&2; exit 1 ;;
  esac
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for dir in */; do
  lang="${dir%/}"
  voice="$(voice_for "$lang")"
  for txt in "$lang"/*.txt; do
    name="$(basename "$txt" .txt)"
    v="$voice"
    # Text written in English inside another language ("For English, press 2") uses the en voice.
    if ! LC_ALL=C grep -q '[^ -~]' "$txt" && [ "$lang" != en ]; then v=en; fi
    espeak-ng -v "$v" -s 190 -w "$tmp/raw.wav" -f "$txt"
    # Trim leading/trailing silence, then resample to the telephone format.
    sox -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$lang/$name.wav" \
      gain -3 silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse pad 0 0.2
  done
  # The record beep: 400 ms of 1 kHz at moderate level.
  sox -D -n -r 8000 -c 1 -b 16 -e signed-integer "$lang/beep.wav" synth 0.4 sine 1000 vol 0.4
done
echo "prompts generated: $(ls */*.wav | wc -l) files, $(cat */*.wav | wc -c) bytes"
