"""How long the helper takes to check the SNI index's certificates (sni_pairs: every domain's
fullchain and key read without following links and loaded as a pair) and to render the code
files with them. Run: .venv/bin/python bench/sni_index.py [DOMAINS]"""
import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_helper import load_helper_module
from tests.test_tls_sni import _leaf
from tests import mailstack
from mailconf import tls
from mailconf.snapshot import Layout
from mailconf.tls import SniName
from mailconf.render import render_code
from mailconf.params import CodeParams
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
root = Path(tempfile.mkdtemp())
ca, ca_key = mailstack._make_ca("bench")
cert, key = _leaf(ca, ca_key, ["mail.x.test"])  # same pair for every domain: loading cost is what we measure
pairs = []
for i in range(N):
    d = f"d{i:05}.test"
    folder = root / tls.domain_folder(d).lstrip("/")
    folder.mkdir(parents=True)
    (folder / "fullchain.pem").write_bytes(cert); (folder / "privkey.pem").write_bytes(key)
    pairs += [SniName(f"{p}.{d}", d) for p in ("autoconfig", "mail", "mta-sts", "webmail")]
(root / tls.SNI_INDEX.lstrip("/")).write_bytes(tls.render_sni_index(pairs))
h = load_helper_module()
layout = Layout(root=str(root), tls_certificate="/etc/mailpanel/tls/fullchain.pem", webmail_sites=True)
t = time.perf_counter(); usable, skipped = h.sni_pairs(h.Tree(str(root), chown=False), layout); t1 = time.perf_counter() - t
t = time.perf_counter(); files = render_code(CodeParams(), layout, usable); t2 = time.perf_counter() - t
print(f"{N} domains ({len(usable)} names): sni_pairs {t1:.2f} s ({t1/N*1000:.2f} ms/domain), render_code {t2:.2f} s; dovecot.conf {len(files['/etc/dovecot/dovecot.conf'].content)//1024} KiB, sites {len(files['/etc/nginx/conf.d/mailpanel-tls-sites.conf'].content)//1024} KiB")
# the verdict cache (SniCache): kept once the files are 2 s old; then only changed pairs load
time.sleep(2.1)
tree = h.Tree(str(root), chown=False)
timed = []
for step in ("settled, cache written", "unchanged (cache)", "one key replaced (cert_install's rename)"):
    if step.startswith("one"):
        folder = root / tls.domain_folder("d00001.test").lstrip("/")
        (folder / "new.pem").write_bytes(key); (folder / "new.pem").replace(folder / "privkey.pem")
    t = time.perf_counter(); again = h.sni_pairs(tree, layout); dt = time.perf_counter() - t
    assert again == (usable, {}), again[1]
    timed.append(f"{step} {dt:.3f} s ({dt/N*1000:.3f} ms/domain)")
print("sni_pairs with the cache: " + "; ".join(timed))
# prune_domain_certificates after every code apply: the index parsed, the live code files
# read only when a domain left the index (then the one removed domain's files deleted)
import json
(root / "etc/mailpanel/layout.json").write_text(json.dumps({"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "webmail_sites": True}))
for path, spec in files.items():
    target = root / path.lstrip("/"); target.parent.mkdir(parents=True, exist_ok=True); target.write_bytes(spec.content)
tree = h.Tree(str(root), chown=False)
t = time.perf_counter(); nothing = h.prune_domain_certificates(tree, None); t3 = time.perf_counter() - t
(root / tls.SNI_INDEX.lstrip("/")).write_bytes(tls.render_sni_index([p for p in pairs if p.domain != "d00000.test"]))
rendered = render_code(CodeParams(), layout, tuple(p for p in usable if p.domain != "d00000.test"))
for path, spec in rendered.items():
    (root / path.lstrip("/")).write_bytes(spec.content)
t = time.perf_counter(); one = h.prune_domain_certificates(tree, None); t4 = time.perf_counter() - t
assert nothing == ([], {}) and one == (["d00000.test"], {}), (nothing, one)
print(f"prune after a code apply: all in the index {t3*1000:.1f} ms; one domain removed {t4*1000:.1f} ms")
import shutil; shutil.rmtree(root)
