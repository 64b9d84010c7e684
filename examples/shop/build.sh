#!/bin/sh
# Builds bin/shop, the one program behind every service of the example shop, once per release
# directory: Cutover runs this build command for each service, and only the first one compiles.
# Needs nothing but rustc. The binary is linked under a temporary name and renamed into place,
# so builds running side by side never leave a half-written bin/shop behind.
set -eu
cd "$(dirname "$0")"
mkdir -p bin
[ -x bin/shop ] && exit 0
rustc -O --edition 2021 -o "bin/shop.tmp.$$" src/shop.rs
mv -f "bin/shop.tmp.$$" bin/shop
