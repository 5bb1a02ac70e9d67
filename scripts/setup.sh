# Shared first-run set-up of scripts/test and scripts/compare (sourced, not run).
#
#   fp_setup EXTRA MARIADB     EXTRA: the pip extra to install (test, bench, docs)
#                              MARIADB: need | want (need: the tests' server and driver;
#                              want: the comparison falls back to SQLite without them)
#
# On a machine with only git and python3 it installs, and says so: the Debian packages
# that are missing (when run as root; otherwise it prints the exact `sudo apt-get install`
# line), a project virtualenv in .venv, fastpool with its compiled core and the extra's
# packages. A second run with nothing changed installs and builds nothing. Afterwards
# $FP_PYTHON is the virtualenv's python.

fp_say() { printf '%s: %s\n' "$FP_SCRIPT" "$*" >&2; }

fp_system_python() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null 2>&1; then echo "$py"; return 0; fi
  done
  fp_say "no python3 on PATH: install it (apt-get install python3)"; exit 1
}

# The Debian packages whose absence this machine shows, one word each.
fp_missing_packages() {
  local py=$1 mariadb=$2 extra=${3:-} missing=()
  "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  "$py" - >/dev/null 2>&1 <<'EOF' || missing+=(python3-dev)
import os, sysconfig, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
  { command -v cc || command -v gcc; } >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  # mysqlclient compiles against libmariadb (found through pkg-config); the docs need no driver.
  if [ "$extra" != docs ]; then
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libmariadb; } || missing+=(libmariadb-dev)
  fi
  if [ "$mariadb" = need ]; then
    { command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null 2>&1 || missing+=(mariadb-server)
    # The PostgreSQL tests' throwaway server and PgBouncer in front of it.
    { command -v postgres || ls /usr/lib/postgresql/*/bin/postgres; } >/dev/null 2>&1 || missing+=(postgresql)
    { command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null 2>&1 || missing+=(pgbouncer)
    # The host-list tests' replication bed: PostgreSQL under Patroni on one etcd member.
    command -v patroni >/dev/null 2>&1 || missing+=(patroni)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    # The documentation's browser test (tests/test_docs.py): Debian's Chromium and its
    # driver (elsewhere, e.g. Ubuntu's snap-only chromium, that test skips).
    local os_release=""
    [ -r /etc/os-release ] && os_release=$(< /etc/os-release)
    if [[ $'\n'"$os_release"$'\n' == *$'\nID=debian\n'* ]]; then
      command -v chromium >/dev/null 2>&1 || missing+=(chromium)
      { command -v chromedriver || [ -x /usr/lib/chromium/chromedriver ]; } >/dev/null 2>&1 \
        || missing+=(chromium-driver)
    fi
  fi
  # The comparison's noise-free view, python -m bench.instructions, counts under callgrind.
  if [ "$extra" = bench ]; then
    command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
  fi
  echo "${missing[*]:-}"
}

fp_install_packages() {
  local py=$1 mariadb=$2 extra=${3:-} missing
  missing=$(fp_missing_packages "$py" "$mariadb" "$extra")
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    local log="${TMPDIR:-/tmp}/fastpool-setup-apt.log"
    fp_say "installing Debian packages: $missing (apt's log: $log)"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      fp_say "apt-get failed: the end of its log is above, all of it in $log"; exit 1
    fi
    fp_say "installed: $missing"
    return 0
  fi
  local essential="" optional="" p
  for p in $missing; do
    case $p in
      python3-venv|python3-dev|gcc|libc6-dev) essential="$essential $p" ;;
      valgrind) fp_say "python -m bench.instructions needs valgrind: sudo apt-get install -y valgrind" ;;
      *) optional="$optional $p" ;;
    esac
  done
  [ -n "$essential$optional" ] || return 0
  if [ -n "$essential" ] || [ "$mariadb" = need ]; then
    fp_say "this machine lacks Debian packages it needs; install them with:"
    printf '\n    sudo apt-get install -y%s\n\n' "$essential$optional" >&2
    exit 1
  fi
  fp_say "no MariaDB driver build here (missing:$optional): the comparison runs on SQLite"
  fp_say "(for MariaDB too: sudo apt-get install -y$optional mariadb-server)"
}

# A fingerprint of everything an install depends on: a change rebuilds, nothing else does.
fp_fingerprint() {
  local extra=$1 py=$2
  {
    echo "$extra"
    "$py" -c 'import sys; print(sys.version)'
    pkg-config --exists libmariadb 2>/dev/null && echo "with libmariadb"
    cat pyproject.toml setup.py MANIFEST.in
    cat src_c/fastpool/*.pyx src_c/fastpool/*.pxd src_c/fastpool/*.h
  } | sha256sum | cut -d' ' -f1
}

fp_setup() {
  local extra=$1 mariadb=$2 py venv=.venv stamp
  py=$(fp_system_python)
  fp_install_packages "$py" "$mariadb" "$extra"
  if [ ! -x "$venv/bin/python" ]; then
    fp_say "creating the project virtualenv $venv"
    "$py" -m venv "$venv"
  fi
  FP_PYTHON=$PWD/$venv/bin/python
  stamp="$venv/.fastpool-$extra.stamp"
  local want
  want=$(fp_fingerprint "$extra" "$FP_PYTHON")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
      && "$FP_PYTHON" -c 'import fastpool._core' 2>/dev/null; then
    fp_say "$venv is up to date (fastpool[$extra] and its compiled core): nothing to install"
  else
    rm -f "$stamp"
    fp_say "installing fastpool[$extra] into $venv and building its compiled core (first run: a minute or two)"
    # pip's log goes to a file, named if anything fails; one line per step here.
    local log="$venv/setup.log"
    fp_say "pip's log: $log"
    "$FP_PYTHON" -m pip install --disable-pip-version-check -e ".[$extra]" >"$log" 2>&1 || true
    if ! "$FP_PYTHON" -c 'import fastpool._core' 2>/dev/null; then
      tail -n 30 "$log" >&2
      fp_say "the install failed: the end of pip's log is above, all of it in $log"; exit 1
    fi
    if ! "$FP_PYTHON" -c 'import MySQLdb' 2>/dev/null; then
      if pkg-config --exists libmariadb 2>/dev/null; then
        fp_say "installing mysqlclient (compiles against libmariadb)"
        "$FP_PYTHON" -m pip install --disable-pip-version-check 'mysqlclient>=2.2' >>"$log" 2>&1 \
          || fp_say "mysqlclient could not be installed (see $log)"
      fi
    fi
    fp_say "installed fastpool[$extra] and its compiled core"
    echo "$want" > "$stamp"
  fi
  export PATH="$PWD/$venv/bin:$PATH"
}
