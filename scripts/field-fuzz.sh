#!/usr/bin/env bash
# The whole field fuzz (issue 19): every field of every on-disk structure the decoders read, set
# to zeroes, ones, +1, -1, a random value and its high bit with the CRC made valid, each image
# mounted and walked, checked (fsck -n), repaired (fsck -y) and checked again. Prints the table
# (D detected and repaired, H harmless, M missed, '=' the value it had; PANIC, HANG or NR, a
# repair that did not converge, fail the run) and a line of totals. The suite runs one value per
# field (tests/fsck.rs every_field_of_every_structure_fuzzed). Built in the ci profile: an integer
# overflow or a debug assertion a damaged field reaches is a panic, as in the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
FIELD_FUZZ=all cargo test --profile ci --test fsck -- every_field_of_every_structure_fuzzed \
    --nocapture --test-threads 1 2>&1 | grep -E '^\||^fields|^missed|^FAILED|^test result'
