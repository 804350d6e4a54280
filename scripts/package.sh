#!/usr/bin/env bash
# Builds the Debian package: target/debian/slipway_VERSION_ARCH.deb.
#
#   scripts/package.sh                   # release build (cargo build --release), then the package
#   scripts/package.sh --bin-dir DIR     # package the slipway and slipway-bridge-helper in DIR
#                                        # (e.g. target/debug: what the test suite does)
#   scripts/package.sh --out DIR         # write the .deb (and debug/) to DIR instead
#
# The package is assembled by hand and built with dpkg-deb (no cargo-deb):
# nothing to install beyond dpkg, and the same script packages a release or
# a debug build. Contents:
#   /usr/bin/slipway, /usr/libexec/slipway-bridge-helper   stripped; the
#       debug info is split off into OUT/debug/*.debug (GNU debuglink)
#   /usr/share/man/man1/slipway*.1.gz, man8/slipway-bridge-helper.8.gz
#   bash, zsh and fish completions           (`slipway generate`, from clap)
#   /usr/lib/systemd/{system,user}/…         (dist/systemd/)
#   /usr/share/doc/slipway/                  README.md, docs/*.md, copyright
# The maintainer scripts (dist/debian/) give the bridge helper its
# privilege (cap_net_admin, or setuid root where file capabilities cannot
# be set) unless the administrator has a dpkg-statoverride for it, and
# honour DPKG_ROOT (installs into another root with --force-script-chrootless).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

bin_dir=
out=
while (($#)); do
    case $1 in
        --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

for tool in dpkg-deb dpkg objcopy gzip; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages dpkg, binutils, gzip)"
done

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=${out:-$target_dir/debian}
if [ -z "$bin_dir" ]; then
    cargo build --release --locked -p slipway --bins
    bin_dir=$target_dir/release
fi
for b in slipway slipway-bridge-helper; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build it first (cargo build -p slipway --bins)"
done

# The Maintainer: field and the changelog's signature, as Debian's tools
# take them (DEBFULLNAME, DEBEMAIL).
maintainer="${DEBFULLNAME:-slipway developers} <${DEBEMAIL:-slipway-devel@example.org}>"
case $maintainer in *@*@*|*'|'*) die "DEBFULLNAME/DEBEMAIL must not contain '|' or more than one '@'" ;; esac

version=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "slipway"))')
arch=$(dpkg --print-architecture)

# Reproducible: file times clamped to the last commit's (dpkg-deb honours
# SOURCE_DATE_EPOCH), gzip without names or times.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

mkdir -p "$out"
stage=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
gen=$stage/gen
# Everything in the package is root's, whoever builds it (dpkg-deb --root-owner-group).
umask 022

# Binaries: stripped, with the debug info kept beside the package.
install -d "$root/usr/bin" "$root/usr/libexec" "$out/debug"
strip_into() {
    local src=$1 dst=$2 name
    name=$(basename "$dst")
    objcopy --only-keep-debug "$src" "$out/debug/$name.debug"
    objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$out/debug/$name.debug" "$src" "$dst"
    chmod 0755 "$dst"
}
strip_into "$bin_dir/slipway" "$root/usr/bin/slipway"
strip_into "$bin_dir/slipway-bridge-helper" "$root/usr/libexec/slipway-bridge-helper"

# Manual pages and completions, generated from the clap definitions by the
# binary being packaged.
"$root/usr/bin/slipway" generate man "$gen/man"
"$root/usr/bin/slipway" generate completions "$gen/completions"
for section in 1 8; do
    install -d "$root/usr/share/man/man$section"
    for page in "$gen/man/man$section"/*."$section"; do
        gzip -9n <"$page" >"$root/usr/share/man/man$section/$(basename "$page").gz"
    done
done
install -D -m 0644 "$gen/completions/bash/slipway" "$root/usr/share/bash-completion/completions/slipway"
install -D -m 0644 "$gen/completions/zsh/_slipway" "$root/usr/share/zsh/vendor-completions/_slipway"
install -D -m 0644 "$gen/completions/fish/slipway.fish" "$root/usr/share/fish/vendor_completions.d/slipway.fish"

# systemd units.
for kind in system user; do
    install -d "$root/usr/lib/systemd/$kind"
    install -m 0644 dist/systemd/"$kind"/* "$root/usr/lib/systemd/$kind/"
done

# Documentation, uncompressed so that the help texts' and the README's
# references (docs/NAME.md) name files that are there as written.
doc=$root/usr/share/doc/slipway
install -d "$doc/docs"
install -m 0644 README.md "$doc/"
install -m 0644 docs/*.md "$doc/docs/"
# A native package's changelog: one entry for this build.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'slipway (%s) unstable; urgency=medium\n\n  * Built by scripts/package.sh from commit %s.\n\n -- %s  %s\n' \
    "$version" "$commit" "$maintainer" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
{
    cat dist/debian/copyright
    printf '\nComment: Rust crates compiled into the binaries (name version: license)\n'
    cargo tree --locked -p slipway -e normal --prefix none -f '{p} {l}' 2>/dev/null \
        | sed -e 's/ (.*)//' -e 's/^/ /' | grep -v '^ slipway' | sort -u
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

# Control files.
install -d "$root/DEBIAN"
install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
glibc=$(objdump -T "$root/usr/bin/slipway" "$root/usr/libexec/slipway-bridge-helper" \
    | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
depends="libc6 (>= $glibc)"
if readelf -d "$root/usr/bin/slipway" | grep -q 'libgcc_s\.so'; then
    depends="$depends, libgcc-s1"
fi
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s|@MAINTAINER@|$maintainer|" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" dist/debian/control >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

deb=$out/slipway_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb.tmp" >/dev/null
mv "$deb.tmp" "$deb"
echo "$deb"
