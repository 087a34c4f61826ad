#!/usr/bin/env bash
# Prints the package's copyright file (Debian's machine-readable format,
# https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/): the
# project under Apache-2.0, and the Rust crates its binaries link in
# statically, each with its own license as Cargo.lock pins it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

crates=$(cargo tree --locked --offline -p oci-tpm-hook -e normal --prefix none --format '{p}: {l}' \
    | sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' \
    | grep -v '^oci-tpm-hook \|^tpm2-selftest \|^devcgroup ' | LC_ALL=C sort -u)
[[ -n "$crates" ]] || { echo "copyright.sh: cargo tree listed no crates" >&2; exit 1; }

cat <<HEADER
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: oci-tpm-hook
Comment: The binaries /usr/bin/oci-tpm-hook and /usr/bin/oci-tpm-runtime
 are statically linked with these Rust crates, each under the license
 named after it:
 .
$(sed 's/^/ /' <<<"$crates")

Files: *
Copyright: oci-tpm-hook developers
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may
 not use this software except in compliance with the License. You may
 obtain a copy of the License at
 .
 https://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0,
 can be found in /usr/share/common-licenses/Apache-2.0.
HEADER
