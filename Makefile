# mailpanel — the two commands: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/mailpanel

.PHONY: run test test-sqlite test-postgres test-install bench venv system-packages system-packages-test messages

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else "Python 3.13 is required (see .python-version)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

system-packages:
	bash scripts/install-system-packages.sh deploy/apt-packages.txt

system-packages-test:
	bash scripts/install-system-packages.sh deploy/apt-packages.txt deploy/apt-packages-test.txt
	bash scripts/webmail-user.sh

messages: venv
	$(PY) manage.py compilemessages --ignore=.venv -v 0

run: system-packages venv messages
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py ensure_admin
	$(PY) manage.py mail config apply || echo "first apply failed: see the job log"
	bash scripts/run-dev.sh

test: system-packages-test venv messages
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite:
	$(PY) -m pytest

test-postgres:
	DATABASE_URL=$(PG_URL) $(PY) -m pytest

# deploy/install.sh --offline in a booted Debian 13 box (systemd-nspawn, private
# network), then mail, web, restart, re-install and upgrade checks inside it.
# Root only; the trixie tree is cached in var/testbox (tests/testbox.py).
test-install: venv
	$(PY) -m tests.testbox

bench: venv
	$(PY) bench/run.py
	# 10,000 domains over three mail nodes on RQ (PostgreSQL and Redis on 127.0.0.1);
	# not with BENCH_ONLY=pages or BENCH_ONLY=apply (run.py's part alone)
	if [ -z "$$BENCH_ONLY" ]; then $(PY) bench/nodes.py; fi
	# a moving domain's mail copied with dsync (helper sync_mail, real Dovecot; root)
	if [ -z "$$BENCH_ONLY" ]; then $(PY) bench/domain_move.py; fi
