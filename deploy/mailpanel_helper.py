#!/usr/bin/python3 -I
"""mailpanel's privileged helper: the only part of the panel that runs as root.

Installed as /usr/local/sbin/mailpanel-helper and run through sudo with a fixed
command line (deploy/sudoers.d/mailpanel). One JSON request on stdin, one JSON
answer on stdout; secrets travel only on stdin, never on argv.

Exit status: 0 done, 1 operation failed (the last good files stay live),
2 request refused (nothing touched).

    {"op": "state"}  or  {"op": "state", "domains": ["example.org"]}
        -> {"ok": true, "files": {"/etc/exim4/exim4.conf": "<sha256>", ...}}
    {"op": "apply", "code": {PARAMS}, "write": [{"path": P, "content_b64": B}, ...],
                    "remove": [P, ...], "reload": [SERVICE, ...]}
        -> {"ok": true, "written": [...], "removed": [...], "reloads": {...}}
        "code" (mailconf.params.CodeParams as JSON): the helper renders the
        code files itself (exim4.conf, dovecot.conf, the nftables table,
        SnappyMail's application.ini) with its own Layout, writes those that
        differ, removes those no longer rendered and reloads their services.
        "write" carries data files only, each checked against its grammar
        (mailconf.grammar); a code file's content is refused.
    {"op": "apply", "write": [...], "sync_domains": ["example.org"]}
        -> the writes are the whole wanted content of those domain folders:
           unchanged files are skipped, other managed files there removed;
           the answer adds "server_files" (server-wide files present)
    {"op": "quota_usage", "domain": "example.org"}
        -> {"ok": true, "usage": {"info": {"bytes": N, "messages": M}}}
    {"op": "reload", "services": [SERVICE, ...]}
        -> {"ok": true, "reloads": {SERVICE: {"ok": true, "output": ""}}}
    {"op": "install_tarball", "tarball_b64": B, "sha256": HEX}
        -> {"ok": true, "files": N, "dirs": N, "kept_data": bool}
    {"op": "read", "path": P}          (READABLE_FILES only)
        -> {"ok": true, "exists": bool, "content_b64": B}
    {"op": "move_mail_away", "domain": "example.org"}
        -> {"ok": true, "moved_to": "<mail root>/.deleted/example.org-<UTC>" or null}
    {"op": "sync_mail", "domain": "example.org", "local_parts": ["alice", ...], "peer": NODE}
        -> {"ok": true, "synced": ["alice", ...], "missing": [...]}
        one-way doveadm sync (dsync) of each mailbox from this node's mail
        root to the peer named in root's /etc/mailpanel/mail-peers.json
        (its mail root on this machine, or tcps:HOST:PORT to its doveadm
        listener with the shared /etc/mailpanel/doveadm.password)
    {"op": "purge_deleted_mail", "older_than_days": N}
        -> {"ok": true, "purged": ["example.org-20261128083000", ...]}
    {"op": "queue_list", "offset": N, "limit": N, "sender": S, "recipient": S,
                         "domains": [D, ...], "frozen": B, "held": B, "sender_key": K}
        -> {"ok": true, "total": N, "frozen": N, "held": N, "messages": [ENVELOPE, ...]}
    {"op": "queue_show", "id": ID, "body": false}
        -> {"ok": true, "found": true, "message": {ENVELOPE, "headers": [...]}}
    {"op": "queue_action", "action": "deliver|freeze|thaw|delete|bounce",
                           "ids": [ID, ...]}  or  "sender_key": "alice@example.org"
        -> {"ok": true, "ids": [...], "status": N, "output": "..."}
    {"op": "held_senders"}
        -> {"ok": true, "senders": [{"sender_key", "count", "reasons", "recipients",
                                     "sources", "ids", "first", "last"}, ...]}
    {"op": "kick_mailbox", "address": "alice@example.org"}
        -> {"ok": true, "kicked": bool}
    {"op": "log_search", "terms": [S, ...], "days": N, "limit": N}
        -> {"ok": true, "lines": [{"source": "exim|dovecot", "line": L}], "truncated": B}
    {"op": "cert_key", "domain": D | "server": true, "names": [N, ...]}
        -> {"ok": true, "csr_pem": CSR}   (the new key stays here, pending)
    {"op": "cert_install", "domain": D | "server": true, "chain_pem": PEM}
        -> {"ok": true, "names": [...], "not_after": T, "issuer": S, "reloads": {...}}
    {"op": "cert_remove", "domain": D}
        -> {"ok": true, "removed": bool, "deleted": bool, "kept_until_apply": bool}

Owner, group and mode of every file come from mailconf.managed, never from the
request. Paths in requests and answers are production paths; ``--root DIR``
moves them all under DIR (development and tests). Where the daemons' files
live (ports, sockets, spool, TLS paths) is the helper's Layout: the defaults,
or ``<root>/etc/mailpanel/layout.json`` when root owns it.

Standard library only and no Django: it has to keep working whatever happens to
the panel's virtualenv, and it must run on the distribution's python3 (Debian 12
ships 3.11). Its one library is the stdlib-only ``mailconf`` package, imported
from a folder only root can write (see trusted_library), never from the
panel's virtualenv: root runs only code that root owns.
"""

import argparse
import errno
import fcntl
import grp
import hashlib
import importlib.util
import io
import json
import os
import posixpath
import pwd
import re
import signal
import stat
import sys
import time


def _lazy(name):
    """The module, loaded when first used (the stdlib's LazyLoader): a queue
    page or a log search needs none of what an apply or an install does, and
    every import is paid again by every request (tarfile alone ~10 ms)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


base64 = _lazy("base64")
binascii = _lazy("binascii")
calendar = _lazy("calendar")
secrets = _lazy("secrets")
shlex = _lazy("shlex")
shutil = _lazy("shutil")
subprocess = _lazy("subprocess")
tarfile = _lazy("tarfile")
tempfile = _lazy("tempfile")

# --------------------------------------------------------------------------
# The library: mailconf (renderers, grammars, the managed-file table), from the
# checkout this file sits in (development, tests) or beside it where install.sh
# puts both root-owned (deploy/mailpanel-helper, the command sudo runs, checks
# that whole folder before it imports this module from there).

HELPER_DIR = os.path.dirname(os.path.realpath(__file__))
LIBRARY_DIRS = (HELPER_DIR, os.path.dirname(HELPER_DIR), "/usr/local/lib/mailpanel-helper")


def _writable_by_others(st):
    # A sticky folder (/tmp) lets nobody else rename or delete root's entries.
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return False
    return bool(st.st_mode & 0o022)


def trusted_library():
    """The folder holding mailconf/. As root, refuse to import it unless root
    owns it, every folder above it, and every file in it, and none of them is
    writable by anyone else: otherwise whoever could write there would run
    code as root the next time the panel asks for an apply."""
    for folder in LIBRARY_DIRS:
        if os.path.isfile(os.path.join(folder, "mailconf", "__init__.py")):
            break
    else:
        raise SystemExit("mailpanel-helper: the mailconf package is missing (looked in %s)"
                         % ", ".join(LIBRARY_DIRS))
    if os.geteuid() != 0:
        return folder  # development: the helper is no more privileged than its caller
    package = os.path.join(folder, "mailconf")
    suspects = []
    current = package
    while True:
        st = os.lstat(current)
        if st.st_uid != 0 or _writable_by_others(st) or stat.S_ISLNK(st.st_mode):
            suspects.append(current)
        if current == "/":
            break
        current = os.path.dirname(current)
    for dirpath, dirnames, filenames in os.walk(package):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_uid != 0 or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
                suspects.append(path)
    if suspects:
        raise SystemExit(
            "mailpanel-helper: refusing to run code root does not own: %s" % ", ".join(suspects[:5])
        )
    return folder


sys.dont_write_bytecode = True  # root never writes into the library
sys.path.insert(0, trusted_library())

# The renderers (mailconf.params, .render, .snapshot) are imported only by a
# request that carries "code": a one-domain apply stays a few imports light.
from mailconf import managed  # noqa: E402

grammar = _lazy("mailconf.grammar")  # the data files of an apply
tls = _lazy("mailconf.tls")  # certificates

SNAPPYMAIL_DATA = managed.SNAPPYMAIL_DATA
DOMAINS_DIR = managed.DOMAINS_DIR
CODE, DATA = managed.CODE, managed.DATA
LAYOUT_FILE = "/etc/mailpanel/layout.json"

# Directories the helper may create on the way to a managed file. First match
# wins; a pattern ending in "/**" covers the folder and everything below it.
# Existing directories are never changed. remove_when_empty: the folder goes
# away with its last managed file (a deleted mail domain leaves no folder that
# Exim's dsearch would still find).
# pattern, owner, group, mode, remove_when_empty
DIRECTORIES = (
    ("/etc/exim4/domains", "root", "Debian-exim", 0o750, False),
    ("/etc/exim4/domains/{domain}", "root", "Debian-exim", 0o750, True),
    ("/var/lib/snappymail/data/**", managed.WEBMAIL_USER, managed.WEBMAIL_USER, 0o750, False),
    # the helper's caches (RootCache: queue envelopes, SNI pair verdicts): root's alone
    ("/var/cache/mailpanel-helper", "root", "root", 0o700, False),
)
DEFAULT_DIRECTORY = ("root", "root", 0o755)

# panel service name -> systemd unit; None = not a unit (see reload_command)
SERVICES = {
    "exim4": "exim4",
    "dovecot": "dovecot",
    "php-fpm": "php8.2-fpm",
    "firewall": None,
    "nginx": "nginx",
    # SnappyMail's own PHP-FPM master (mailconf/render/webmail.py)
    "webmail-php": "mailpanel-webmail-php",
}
FIREWALL_RULES = "/etc/nftables.d/mailpanel.nft"

# SnappyMail's release is unpacked here by "install_tarball". The code belongs
# to root (readable by all: nginx serves its static files, the webmail's
# PHP-FPM user runs it; it is public code); data/ belongs to that user, which
# writes its settings and users' data there.
# folder, (owner, group, dir mode, file mode) for code, same for data/
SNAPPYMAIL_DIR = managed.SNAPPYMAIL_DIR
SNAPPYMAIL_CODE_OWNER = ("root", "root", 0o755, 0o644)
SNAPPYMAIL_DATA_OWNER = (managed.WEBMAIL_USER, managed.WEBMAIL_USER, 0o750, 0o640)
MAX_TARBALL_MEMBERS = 50000
MAX_TARBALL_UNPACKED_BYTES = 1024 * 1024 * 1024
STAGING_MARK = ".mailpanel-staging-"

# Files the "read" op may return: the SnappyMail credentials the panel shows to
# an admin until they are deleted. Nothing else is ever read back.
READABLE_FILES = ("/root/.snappymail",)

# Matched whole (fullmatch) everywhere: "$" would also match before a newline.
DOMAIN_RE = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
)

LOCK_FILE = "/run/mailpanel-helper.lock"
# The helper runs as root: programs are looked up on this PATH only.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VALIDATE_TIMEOUT = 60
# Below the panel's client timeout (MAILPANEL_HELPER_TIMEOUT, 60 s), so the
# panel hears "busy" from the helper rather than its own timeout.
LOCK_TIMEOUT = 50
RELOAD_TIMEOUT = 120
MAX_REQUEST_BYTES = 512 * 1024 * 1024
MAX_OUTPUT_CHARS = 8000
TMP_MARK = ".mailpanel-tmp-"
TMP_NAME_RE = re.compile(r"\..+" + re.escape(TMP_MARK) + r"[0-9a-f]{12}")

OK, FAILED, REFUSED = 0, 1, 2


# --------------------------------------------------------------------------
# Errors


class Refused(Exception):
    """The request breaks a rule: nothing was touched. Exit status 2."""

    def __init__(self, rule, message):
        super().__init__(message)
        self.rule = rule
        self.message = message


class Failed(Exception):
    """The operation could not be carried out. Exit status 1."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


# --------------------------------------------------------------------------
# Tables compiled into matchers


def _pattern_regex(pattern):
    subtree = pattern.endswith("/**")
    if subtree:
        pattern = pattern[:-3]
    parts = [re.escape(p) for p in pattern.split("{domain}")]
    body = "(?P<domain>[^/]+)".join(parts)
    return re.compile(body + ("(?:/.*)?" if subtree else ""), re.DOTALL)


class FileRule:
    def __init__(self, pattern, owner, group, mode, kind, check, service):
        self.pattern = pattern
        self.regex = _pattern_regex(pattern)
        self.owner, self.group, self.mode = owner, group, mode
        self.kind, self.check, self.service = kind, check, service


class DirRule:
    def __init__(self, pattern, owner, group, mode, remove_when_empty):
        self.regex = _pattern_regex(pattern)
        self.owner, self.group, self.mode = owner, group, mode
        self.remove_when_empty = remove_when_empty


FILE_RULES = [FileRule(*row) for row in managed.MANAGED_FILES]
DIR_RULES = [DirRule(*row) for row in DIRECTORIES]


def _domain_ok(match):
    domain = match.groupdict().get("domain")
    return domain is None or bool(DOMAIN_RE.fullmatch(domain))


def check_path(path):
    """Return the FileRule for a production path, or refuse naming the rule."""
    if not isinstance(path, str) or not path:
        raise Refused("bad request", "a path must be a non-empty string")
    if ".." in path.split("/"):
        raise Refused("..", "%r: '..' is not allowed in a path" % path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise Refused("control character", "%r: control characters are not allowed in a path" % path)
    if not path.startswith("/") or "//" in path or posixpath.normpath(path) != path:
        raise Refused("non-normalised", "%r: not an absolute, normalised path" % path)
    bad_domain = False
    for rule in FILE_RULES:
        match = rule.regex.fullmatch(path)
        if match:
            if _domain_ok(match):
                return rule
            bad_domain = True
    if bad_domain:
        raise Refused(
            "bad domain folder name",
            "%r: the domain folder is not a lower-case IDNA domain name" % path,
        )
    raise Refused("outside allowlist", "%r: not a file the panel manages" % path)


def dir_rule(path):
    for rule in DIR_RULES:
        match = rule.regex.fullmatch(path)
        if match and _domain_ok(match):
            return rule
    return None


def check_service(name):
    if not isinstance(name, str) or name not in SERVICES:
        raise Refused(
            "unknown service",
            "%r: not a service the panel may reload (allowed: %s)"
            % (name, ", ".join(sorted(SERVICES))),
        )
    return name


# --------------------------------------------------------------------------
# The file tree under --root, walked one component at a time without following
# symlinks (O_NOFOLLOW relative to the parent's descriptor), so that a symlink
# planted in a folder another user can write (SnappyMail's data belongs to
# the webmail user) never redirects a root write.

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _truncate(text):
    text = text.strip()
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    head = MAX_OUTPUT_CHARS * 2 // 3
    tail = MAX_OUTPUT_CHARS - head
    return text[:head] + "\n[...]\n" + text[-tail:]


class Tree:
    def __init__(self, root, chown):
        root = os.path.abspath(root)
        self.root = "" if root == "/" else root
        self.chown = chown

    def real(self, path):
        return self.root + path

    # -- checks before anything is touched

    def refuse_symlinks(self, path):
        """Refuse when any existing component of root+path is a symlink."""
        current = self.root
        for name in path.strip("/").split("/"):
            current = current + "/" + name
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                return
            except NotADirectoryError:
                return  # a file where a folder should be: the write fails later
            if stat.S_ISLNK(st.st_mode):
                shown = current[len(self.root) :] or "/"
                raise Refused(
                    "symlink",
                    "%r: %s is a symlink; the helper never follows symlinks"
                    % (path, shown),
                )

    # -- descriptors

    def open_dir(self, dirpath, create=False, created=None):
        """Open root+dirpath without following symlinks; create missing folders
        (owner/mode from DIRECTORIES) when asked, recording them in created."""
        fd = os.open(self.root or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        current = ""
        try:
            for name in [p for p in dirpath.split("/") if p]:
                current += "/" + name
                try:
                    next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o700, dir_fd=fd)
                    next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
                    rule = dir_rule(current)
                    owner, group, mode = (
                        (rule.owner, rule.group, rule.mode)
                        if rule
                        else DEFAULT_DIRECTORY
                    )
                    try:
                        self.set_owner(next_fd, owner, group, mode)
                    except BaseException:
                        os.close(next_fd)
                        raise
                    if created is not None:
                        created.append(current)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Failed("%s: a symlink or not a folder" % current) from e
                    raise
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def set_owner(self, fd, owner, group, mode):
        if self.chown:
            try:
                uid = pwd.getpwnam(owner).pw_uid
                gid = grp.getgrnam(group).gr_gid
            except KeyError as e:
                raise Failed("unknown user or group %s:%s" % (owner, group)) from e
            try:
                os.fchown(fd, uid, gid)
            except PermissionError as e:
                raise Failed(
                    "cannot chown to %s:%s (run as root, or --no-chown in development)"
                    % (owner, group)
                ) from e
        os.fchmod(fd, mode)

    def read(self, path, limit=None):
        """Content and stat of a live file, or None when it does not exist.
        With limit, a larger file is refused (Failed) without being read."""
        dirpath, name = posixpath.split(path)
        try:
            dfd = self.open_dir(dirpath)
        except FileNotFoundError:
            return None
        try:
            try:
                # O_NONBLOCK: opening a FIFO planted at a managed path must not
                # wait for a writer (it is refused below as not a regular file).
                fd = os.open(name, READ_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise Failed("%s: is a symlink" % path) from e
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise Failed("%s: not a regular file" % path)
                if limit is not None and st.st_size > limit:
                    raise Failed("%s: larger than %d bytes" % (path, limit))
                chunks, left = [], (1 << 62) if limit is None else limit + 1
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                content = b"".join(chunks)
                if limit is not None and len(content) > limit:  # grew while read
                    raise Failed("%s: larger than %d bytes" % (path, limit))
                return content, st
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def write_temp(self, path, content, owner, group, mode, created_dirs, exact=None):
        """Write content next to path; return the temp file's name. Owner and
        mode are set on the open descriptor (fchown/fchmod never follow a
        link); exact=(uid, gid, mode) puts back a saved file's numbers."""
        dirpath, name = posixpath.split(path)
        dfd = self.open_dir(dirpath, create=True, created=created_dirs)
        try:
            tmp = "." + name + TMP_MARK + secrets.token_hex(6)
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dfd,
            )
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                if exact is None:
                    self.set_owner(fd, owner, group, mode)
                else:
                    if self.chown:
                        os.fchown(fd, exact[0], exact[1])
                    os.fchmod(fd, exact[2])
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=dfd)
                raise
            os.close(fd)
            return tmp
        finally:
            os.close(dfd)

    def replace(self, dirpath, tmp, name):
        dfd = self.open_dir(dirpath)
        try:
            try:
                old_mtime = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                old_mtime = None
            if old_mtime is not None:
                # Dovecot re-reads a passwd-file only when its mtime (whole
                # seconds) or size changes; a new hash of the same length
                # written within the same second would go unnoticed and the
                # old password keep working. Move the mtime on by a second.
                newer = max(time.time(), int(old_mtime) + 1)
                os.utime(tmp, (newer, newer), dir_fd=dfd, follow_symlinks=False)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def unlink(self, path, missing_ok=True):
        """Remove a file; True if it existed."""
        dirpath, name = posixpath.split(path)
        try:
            dfd = self.open_dir(dirpath)
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        try:
            os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
            return True
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        finally:
            os.close(dfd)

    def rmdir_if_empty(self, dirpath):
        parent, name = posixpath.split(dirpath)
        try:
            dfd = self.open_dir(parent)
        except FileNotFoundError:
            return False
        try:
            os.rmdir(name, dir_fd=dfd)
            return True
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return False
            raise
        finally:
            os.close(dfd)

    def remove_stale_temps(self, dirpath):
        """Temp files left by a helper that was killed mid-apply (we hold the
        lock, so none of them belongs to a running helper)."""
        try:
            dfd = self.open_dir(dirpath)
        except (FileNotFoundError, Failed):
            return
        try:
            for name in os.listdir(dfd):
                if TMP_NAME_RE.fullmatch(name):
                    try:
                        os.unlink(name, dir_fd=dfd)
                    except FileNotFoundError:
                        pass
        finally:
            os.close(dfd)

    def listdir(self, dirpath):
        try:
            dfd = self.open_dir(dirpath)
        except (FileNotFoundError, Failed):
            return []
        try:
            return sorted(os.listdir(dfd))
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------
# Validators. The code files are rendered here, so a validator only double-
# checks our own renderer against the installed daemon. Still, they run as if
# the file were hostile: as nobody, in a fresh network namespace (no network
# at all), on a private copy of the candidate in a folder of their own, with a
# time limit; and only the first error line of what they say comes back.

SANDBOX_USER = 65534  # nobody / nogroup
MAX_VALIDATOR_OUTPUT = 300


def _run(argv, timeout, extra_env=None):
    """(exit status, stdout, stderr) of a child; status None = it did not run."""
    env = {"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8"}
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd="/",
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, "", "%s: timed out after %s s" % (argv[0], timeout)
    except OSError as e:
        return None, "", "%s: %s" % (argv[0], e)
    return (
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def _program(name):
    path = shutil.which(name, path=SAFE_PATH)
    if path is None:
        raise Failed("%s is not installed; cannot validate" % name)
    return path


def sandbox_argv(argv, net_admin=False, bind_ports=False):
    """argv wrapped to run as nobody with no network. As root: a new network
    namespace (unshare) and then setpriv to nobody, no groups, no new
    privileges (setuid exim stays nobody); net_admin keeps CAP_NET_ADMIN
    inside that empty namespace only (nft -c needs it). Not root
    (development): the caller is unprivileged already; nft gets a user
    namespace for the same reason. bind_ports keeps CAP_NET_BIND_SERVICE
    there, the same way (nginx -t binds its listen ports)."""
    if os.geteuid() != 0:
        if net_admin or bind_ports:
            return [_program("unshare"), "--user", "--map-root-user", "--net", "--"] + argv
        return argv
    names = [name for name, wanted in (("net_admin", net_admin), ("net_bind_service", bind_ports)) if wanted]
    keep = ",".join("+" + name for name in names)
    caps = ["--inh-caps=" + keep, "--ambient-caps=" + keep] if names else []
    return [
        _program("unshare"), "--net", "--",
        _program("setpriv"), "--reuid=%d" % SANDBOX_USER, "--regid=%d" % SANDBOX_USER,
        "--clear-groups", "--no-new-privs", *caps, "--",
    ] + argv


def run_sandboxed(argv, content, name, timeout=VALIDATE_TIMEOUT, net_admin=False, bind_ports=False):
    """Run argv (where "{file}" stands for the candidate) on a private copy of
    content. Returns (exit status, stdout, stderr)."""
    folder = tempfile.mkdtemp(prefix="mailpanel-validate-")
    try:
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            if os.geteuid() == 0:
                os.fchown(fd, SANDBOX_USER, SANDBOX_USER)
        finally:
            os.close(fd)
        if os.geteuid() == 0:
            os.chown(folder, SANDBOX_USER, SANDBOX_USER)
        argv = [path if arg == "{file}" else arg for arg in argv]
        return _run(sandbox_argv(argv, net_admin, bind_ports), timeout, {"HOME": folder, "TMPDIR": folder})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def first_error_line(text):
    """What a validator said, cut to its first error line (and the reason on
    the next line, where the error line ends in a colon, as Exim's does):
    never a dump of the configuration, never lines of another file."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if re.search(r"error|fatal|invalid|unknown|failed", line, re.IGNORECASE):
            break
    else:
        index, line = 0, lines[0] if lines else ""
    if line.endswith(":") and index + 1 < len(lines):
        line += " " + lines[index + 1]
    return line[:MAX_VALIDATOR_OUTPUT]


def _validate(argv, content, name, net_admin=False, bind_ports=False):
    code, _stdout, stderr = run_sandboxed(argv, content, name, net_admin=net_admin, bind_ports=bind_ports)
    # stdout is never shown: doveconf -n prints the whole configuration there.
    if code == 0:
        return True, ""
    output = first_error_line(stderr) or "%s exited with status %s" % (
        posixpath.basename(argv[0]), code)
    return False, output


def validate_exim(content):
    return _validate([_program("exim"), "-C", "{file}", "-bV"], content, "exim4.conf")


def validate_doveconf(content):
    return _validate([_program("doveconf"), "-n", "-c", "{file}"], content, "dovecot.conf")


def validate_nft(content):
    return _validate([_program("nft"), "-c", "-f", "{file}"], content, "mailpanel.nft",
                     net_admin=True)


def validate_php_ini(content):
    # SnappyMail reads application.ini with parse_ini_file($f, true).
    php = shutil.which("php", path=SAFE_PATH)
    if php is None:
        return True, "php not installed: application.ini not checked"
    code = "exit(parse_ini_file($argv[1], true) === false ? 1 : 0);"
    return _validate([php, "-n", "-r", code, "{file}"], content, "application.ini")


# nginx -t needs a whole configuration: the candidate goes inside http {}
# (or a server {} for locations) of this one, whose pid file and temporary
# folders are relative to the private folder (-p "$HOME/", run_sandboxed's).
NGINX_TEST_MAIN = b"""pid nginx.pid;
events {}
http {
    client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi; scgi_temp_path scgi;
    access_log off;
%s
}
"""
NGINX_TEST_SERVER = b"server {\n    listen 8080;\n%s\n}\n"


def validate_nginx(content, inside_server=False):
    nginx = shutil.which("nginx", path=SAFE_PATH)
    if nginx is None:
        return True, "nginx not installed: not checked"
    body = NGINX_TEST_SERVER % content if inside_server else content
    script = 'exec "$0" -t -q -e stderr -p "$HOME/" -c "$1"'
    return _validate([_program("sh"), "-c", script, nginx, "{file}"], NGINX_TEST_MAIN % body,
                     "nginx.conf", bind_ports=True)


# The sandbox (nobody) cannot read private keys, and must not: in the copy
# nginx -t checks, each server's certificate pair is replaced by a refusal of
# every handshake. The pairs themselves were loaded by root before rendering
# (sni_pairs); a file that did not load never reaches the configuration.
NGINX_CERT_RE = re.compile(rb"(?m)^(\s*)ssl_certificate(_key)? [^;\n]+;$")


def validate_nginx_tls(content):
    swapped = NGINX_CERT_RE.sub(
        lambda m: m.group(1) + (b"# key checked by the helper" if m.group(2) else b"ssl_reject_handshake on;"),
        content)
    return validate_nginx(swapped)


def validate_php_fpm(content):
    # Debian names the binary after the PHP version (php-fpm8.2, php-fpm8.4).
    found = sorted(
        (name for d in SAFE_PATH.split(":") if os.path.isdir(d) for name in os.listdir(d)
         if re.fullmatch(r"php-fpm[0-9.]+", name)),
        key=lambda name: [int(x) for x in name[7:].split(".") if x.isdigit()],
    )
    if not found:
        return True, "php-fpm not installed: the pool file not checked"
    return _validate([_program(found[-1]), "-t", "-y", "{file}"], content, "webmail-php-fpm.conf")


def validate_php_lint(content):
    # Roundcube's config.inc.php: PHP's own parser (php -l compiles, runs nothing).
    php = shutil.which("php", path=SAFE_PATH)
    if php is None:
        return True, "php not installed: config.inc.php not checked"
    return _validate([php, "-n", "-l", "{file}"], content, "config.inc.php")


VALIDATORS = {
    "exim": validate_exim,
    "doveconf": validate_doveconf,
    "nft": validate_nft,
    "php-ini": validate_php_ini,
    "php-lint": validate_php_lint,
    "php-fpm": validate_php_fpm,
    "nginx": validate_nginx,
    "nginx-locations": lambda content: validate_nginx(content, inside_server=True),
    "nginx-tls": validate_nginx_tls,
}


# --------------------------------------------------------------------------
# Services


def reload_command(service, tree, service_command):
    if service_command:
        # Development and tests: the configured command gets the panel's name.
        return shlex.split(service_command) + ["reload", service]
    if service == "firewall":
        return [_program("nft"), "-f", tree.real(FIREWALL_RULES)]
    if service == "webmail-php":
        # Its unit waits for its file: the first apply that writes it starts it.
        return [_program("systemctl"), "reload-or-restart", SERVICES[service]]
    return [_program("systemctl"), "reload", SERVICES[service]]


def reload_services(services, tree, service_command):
    """Reload in order, stopping at the first failure. Returns (ok, results)."""
    results = {}
    for service in services:
        try:
            argv = reload_command(service, tree, service_command)
        except Failed as e:
            results[service] = {"ok": False, "output": e.message}
            return False, results
        code, stdout, stderr = _run(argv, RELOAD_TIMEOUT)
        output = stdout + stderr
        if code is not None and code != 0 and not output.strip():
            output = "exited with status %d" % code
        results[service] = {"ok": code == 0, "output": _truncate(output)}
        if code != 0:
            return False, results
    return True, results


# --------------------------------------------------------------------------
# Request parsing


def _expect_keys(obj, allowed, what):
    if not isinstance(obj, dict):
        raise Refused("bad request", "%s must be a JSON object" % what)
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise Refused(
            "bad request", "%s: unknown field(s) %s" % (what, ", ".join(unknown))
        )


def _list_of(obj, key, what):
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise Refused("bad request", "%s: %r must be a list" % (what, key))
    return value


def _services(names):
    seen = []
    for name in names:
        check_service(name)
        if name not in seen:
            seen.append(name)
    return seen


def parse_request(raw):
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused("bad request", "stdin is not a JSON object: %s" % e) from e
    if not isinstance(request, dict) or "op" not in request:
        raise Refused("bad request", 'the request must be a JSON object with an "op"')
    return request


def parse_apply(request, tree, options):
    """(data writes, removes, services, rendered code files or None). Data
    files must parse under their grammar; code files come only from "code"."""
    _expect_keys(
        request, ("op", "code", "write", "remove", "reload", "sync_domains"), "apply"
    )
    writes, seen = [], set()
    for item in _list_of(request, "write", "apply"):
        _expect_keys(item, ("path", "content_b64"), "write item")
        path = item.get("path")
        rule = _data_rule(path)
        encoded = item.get("content_b64")
        if not isinstance(encoded, str):
            raise Refused("bad request", "%r: content_b64 must be a string" % path)
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise Refused("bad request", "%r: content_b64 is not base64" % path) from e
        try:
            grammar.check(rule.check, content)
        except ValueError as e:
            raise Refused("grammar", "%r: not a %s file: %s" % (path, rule.check, e)) from e
        if path in seen:
            raise Refused("bad request", "%r: listed twice" % path)
        seen.add(path)
        writes.append((path, rule, content))
    removes = []
    for path in _list_of(request, "remove", "apply"):
        _data_rule(path)
        if path in seen:
            raise Refused("bad request", "%r: listed twice" % path)
        seen.add(path)
        removes.append(path)
    services = _services(_list_of(request, "reload", "apply"))
    code_files, sni_skipped = None, {}
    if "code" in request:
        from mailconf.params import CodeParams

        try:
            params = CodeParams.from_json(request["code"])
        except ValueError as e:
            raise Refused("bad parameter", "code: %s" % e) from e
        code_files, sni_skipped = render_code_files(tree, options, params)
        seen.update(code_files)
    for path in sorted(seen):
        tree.refuse_symlinks(path)
    return writes, removes, services, code_files, sni_skipped


def _data_rule(path):
    rule = check_path(path)
    if rule.kind == CODE:
        raise Refused(
            "code file",
            "%r: a code file; the helper renders it itself from the \"code\" parameters"
            % path,
        )
    return rule


def load_layout(tree, options):
    """Where the daemons' files live: root's choice, never the panel's. The
    defaults, or LAYOUT_FILE under --root when it exists; as root that file
    must belong to root and be writable by nobody else."""
    from mailconf.snapshot import Layout

    fields = {}
    found = tree.read(LAYOUT_FILE)
    if found is not None:
        content, st = found
        if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
            raise Failed("%s: must belong to root and be writable only by root" % LAYOUT_FILE)
        try:
            fields = json.loads(content.decode("utf-8"))
            if not isinstance(fields, dict) or "root" in fields:
                raise ValueError("not an object of layout settings")
            fields = {k: tuple(x) if isinstance(x, list) else x for k, x in fields.items()}
            return Layout(root=tree.root or "/", **fields)
        except (UnicodeDecodeError, ValueError, TypeError) as e:
            raise Failed("%s: %s" % (LAYOUT_FILE, e)) from e
    return Layout(root=tree.root or "/")


# A cache of the helper's own: one root-only JSON file in a folder only root
# can enter (the queue's envelopes, the SNI pairs' verdicts). Anything odd
# about the file (a link, another owner, a group or world bit, a second hard
# link, too big, a checksum that does not fit) and it is ignored and rebuilt;
# a folder that is not root's own (or a link) is not used at all. Each cache
# checks the shape of its own data.
HELPER_CACHE_DIR = "/var/cache/mailpanel-helper"


class RootCache:
    name = magic = limit = None  # file name, checksummed header's prefix, size bound

    def __init__(self, tree):
        self.tree = tree
        self.dir_fd = None
        self.changed = False
        try:
            self.dir_fd = tree.open_dir(HELPER_CACHE_DIR, create=True)
        except (OSError, Failed):
            return
        st = os.fstat(self.dir_fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            os.close(self.dir_fd)
            self.dir_fd = None

    def load(self):
        """The cache's JSON object, or None when there is none to trust."""
        if self.dir_fd is None:
            return None
        try:
            found = self.tree.read(HELPER_CACHE_DIR + "/" + self.name, limit=self.limit)
        except (OSError, Failed):
            return None  # a link, not a plain file, too big
        if found is None:
            return None
        content, st = found
        if st.st_nlink != 1 or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        head, _newline, body = content.partition(b"\n")
        if head != self.magic + hashlib.sha256(body).hexdigest().encode():
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def store(self, data):
        """Write data when the cache changed (a new file renamed over the old
        one: a reader never sees half of it; no fsync, a torn file fails its
        checksum and is rebuilt), and close the cache."""
        if self.dir_fd is None:
            return
        try:
            if not self.changed:
                return
            body = json.dumps(data, separators=(",", ":")).encode()
            if len(body) > self.limit:
                return
            tmp = "." + self.name + TMP_MARK + secrets.token_hex(6)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self.dir_fd)
            try:
                view = memoryview(self.magic + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            # what a helper killed before its rename left (pages hold no lock:
            # a minute-old temp file is no running helper's)
            for name in os.listdir(self.dir_fd):
                if TMP_NAME_RE.fullmatch(name) and time.time() - os.stat(
                        name, dir_fd=self.dir_fd, follow_symlinks=False).st_mtime > 60:
                    os.unlink(name, dir_fd=self.dir_fd)
        except OSError:
            pass  # a cache: the answer stands without it
        finally:
            os.close(self.dir_fd)
            self.dir_fd = None


# --------------------------------------------------------------------------
# SNI: which names get a mail domain's certificate (mailconf/tls.py)

MAX_PEM_BYTES = 64 * 1024
# dovecot.conf and nginx's sites at 50,000 domains stay well below.
MAX_LIVE_CODE_BYTES = 512 * 1024 * 1024


def read_bounded(tree, path, limit):
    """Content of a regular file at root+path (no symlink anywhere), None
    when absent; Failed when larger than limit, without reading it."""
    try:
        found = tree.read(path, limit)
    except NotADirectoryError:
        return None
    return None if found is None else found[0]


def _loads_as_pair(folder, cert, key):
    """Whether a certificate chain and a private key load together (the
    key is the certificate's), with the stdlib's OpenSSL; on root's private
    copies in folder (0700), so no daemon ever reads a file that would stop
    it."""
    import ssl

    paths = []
    for name, content in (("cert.pem", cert), ("key.pem", key)):
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        paths.append(path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*paths)
    except (ssl.SSLError, ValueError, OSError) as e:
        return False, "does not load as a certificate and its key (%s)" % (getattr(e, "reason", None) or e)
    return True, ""


# Which domains' certificate and key loaded as a pair, so that an apply loads
# again only the pairs that changed (1-3 ms a domain: 13-30 s at 10,000). A
# verdict is keyed by the (inode, mtime_ns, ctime_ns, size) of both files as
# they were read; cert_install renames new files into place (a new inode),
# and any write changes ctime, which no one can set back. A verdict is kept
# only for files unchanged for SETTLED_NS: a rewrite in the same tick of the
# kernel's coarse clock could leave the same times behind. Only "loads" is
# kept: a broken pair is checked again every time.
SNI_CACHE_NAME = "sni-pairs"
SNI_CACHE_MAGIC = b"mailpanel-sni-pairs 1 "
MAX_SNI_CACHE_BYTES = 64 * 1024 * 1024
SNI_VERDICT_TYPES = (int,) * 8  # fullchain's then privkey's inode, mtime_ns, ctime_ns, size


def _file_key(st):
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size]


class SniCache(RootCache):
    name, magic, limit = SNI_CACHE_NAME, SNI_CACHE_MAGIC, MAX_SNI_CACHE_BYTES

    def __init__(self, tree):
        self.folder = tree.real(tls.TLS_DIR)  # the certificates it describes
        self.loads, self.kept = {}, {}
        super().__init__(tree)
        data = self.load()
        loads = data.get("loads") if data is not None and data.get("tls") == self.folder else None
        if isinstance(loads, dict) and all(
                type(v) is list and tuple(map(type, v)) == SNI_VERDICT_TYPES for v in loads.values()):
            self.loads = loads

    def hit(self, domain, domains_fd):
        """Whether domain's two files are, by their keys, the ones that
        loaded as a pair (looked at without following links)."""
        verdict = self.loads.get(domain)
        if verdict is None:
            return False
        try:
            fd = os.open(domain, DIR_FLAGS, dir_fd=domains_fd)
        except OSError:
            return False
        try:
            key = []
            for name in (tls.CERT_FILE, tls.KEY_FILE):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    return False
                key += _file_key(st)
        except OSError:
            return False
        finally:
            os.close(fd)
        if key != verdict:
            return False
        self.kept[domain] = verdict
        return True

    def loaded(self, domain, cert_st, key_st):
        now = time.time_ns()
        if all(now - max(st.st_mtime_ns, st.st_ctime_ns) >= SETTLED_NS for st in (cert_st, key_st)):
            self.kept[domain] = _file_key(cert_st) + _file_key(key_st)

    def save(self):
        self.changed = self.kept != self.loads
        self.store({"tls": self.folder, "loads": self.kept})


def sni_pairs(tree, layout):
    """(pairs, skipped): the SNI index's pairs whose domain certificate
    loads, and {domain or "index": why not}. Root's own files, read without
    following links and parsed under the index's grammar; a missing or
    broken certificate leaves its names on the server's certificate. A pair
    whose files are the ones that loaded before (SniCache) is not loaded
    again."""
    if not tls.offers_tls(layout):
        return (), {}
    try:
        content = read_bounded(tree, tls.SNI_INDEX, tls.MAX_SNI_INDEX_BYTES)
        pairs = tls.parse_sni_index(content or b"")
    except (Failed, ValueError) as e:
        return (), {"index": "%s refused: %s" % (tls.SNI_INDEX, getattr(e, "message", e))}
    usable, skipped = set(), {}
    if not pairs:
        return (), skipped
    cache = SniCache(tree)
    try:
        domains_fd = tree.open_dir("%s/%s" % (tls.TLS_DIR, tls.DOMAINS))
    except (OSError, Failed):
        domains_fd = None
    folder = None
    try:
        for domain in sorted({pair.domain for pair in pairs}):
            if domains_fd is not None and cache.hit(domain, domains_fd):
                usable.add(domain)
                continue
            cert_path, key_path = tls.domain_cert_paths(domain)
            try:
                cert = tree.read(cert_path, MAX_PEM_BYTES)
                key = tree.read(key_path, MAX_PEM_BYTES)
            except NotADirectoryError:
                cert = key = None
            except Failed as e:
                skipped[domain] = e.message
                continue
            if cert is None or key is None:
                skipped[domain] = "no %s" % (cert_path if cert is None else key_path)
                continue
            if folder is None:
                folder = tempfile.mkdtemp(prefix="mailpanel-sni-")  # one for all: ≈0.8 ms a domain
            ok, why = _loads_as_pair(folder, cert[0], key[0])
            if ok:
                usable.add(domain)
                cache.loaded(domain, cert[1], key[1])
            else:
                skipped[domain] = "%s: %s" % (cert_path, why)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if domains_fd is not None:
            os.close(domains_fd)
        cache.save()
    return tuple(pair for pair in pairs if pair.domain in usable), skipped


def render_code_files(tree, options, params):
    """(the code files rendered from params, the helper's Layout and the
    usable SNI pairs; {domain: why its certificate is left out})."""
    from mailconf.render import render_code

    layout = load_layout(tree, options)
    pairs, skipped = sni_pairs(tree, layout)
    peers = load_mail_peers(tree)
    if peers.listener is not None:
        doveadm_password(tree)  # the listener's secret is there and sound, or no render
    try:
        code_files = render_code(params, layout, pairs, peers)
    except ValueError as e:
        raise Failed("rendering the code files failed: %s" % e) from e
    for path in code_files:
        if check_path(path).kind != CODE:
            raise Failed("%s: rendered, but not a code file in the table" % path)
    return code_files, skipped


def prune_domain_certificates(tree, options):
    """Delete the certificate and key of every mail domain that left the SNI
    index (cert_remove) once no live code file names them any more: Dovecot
    and nginx read the files named in their configuration at every (re)start,
    so the files go only after an apply rendered those files without them.
    Pending keys (an order under way) stay. Returns (domains whose files were
    deleted, {what: why nothing was deleted})."""
    folder = "%s/%s" % (tls.TLS_DIR, tls.DOMAINS)
    entries = [d for d in tree.listdir(folder) if DOMAIN_RE.fullmatch(d)]
    if not entries:
        return [], {}
    try:
        indexed = {p.domain for p in tls.parse_sni_index(
            read_bounded(tree, tls.SNI_INDEX, tls.MAX_SNI_INDEX_BYTES) or b"")}
        # only folders of domains out of the index are opened (a link is not)
        candidates = [d for d in entries if d not in indexed
                      and set(tree.listdir(folder + "/" + d)) & {tls.FULLCHAIN, tls.PRIVKEY}]
        if not candidates:
            return [], {}
        layout = load_layout(tree, options)
        live = [read_bounded(tree, rule.pattern, MAX_LIVE_CODE_BYTES) or b""
                for rule in FILE_RULES if rule.kind == CODE and "{domain}" not in rule.pattern]
    except (Failed, ValueError) as e:
        return [], {"index": "certificates kept: %s" % getattr(e, "message", e)}
    deleted = []
    for domain in candidates:
        named = (layout.path(tls.domain_folder(domain)) + "/").encode()
        if any(named in content for content in live):
            continue
        for name in (tls.FULLCHAIN, tls.PRIVKEY):
            tree.unlink(tls.domain_folder(domain) + "/" + name)
        tree.rmdir_if_empty(tls.domain_folder(domain))
        deleted.append(domain)
    return deleted, {}


# --------------------------------------------------------------------------
# Operations


def managed_hashes(tree, only_domains=None):
    """sha256 of each managed file that exists; with only_domains, the
    server-wide files and just those domain folders."""
    files = {}

    def add(path):
        found = tree.read(path)
        if found is not None:
            files[path] = hashlib.sha256(found[0]).hexdigest()

    for rule in FILE_RULES:
        if "{domain}" not in rule.pattern:
            try:
                add(rule.pattern)
            except Failed:
                pass  # a symlink or a folder: not a managed file, apply says why
            continue
        prefix, suffix = rule.pattern.split("{domain}", 1)
        if only_domains is None:
            entries = tree.listdir(prefix.rstrip("/"))
        else:
            entries = only_domains
        for entry in entries:
            if only_domains is None and not suffix.startswith("/"):
                # a file per domain (SnappyMail's <domain>.json), not a folder
                if not entry.endswith(suffix):
                    continue
                entry = entry[: -len(suffix)]
            if DOMAIN_RE.fullmatch(entry):
                try:
                    add(prefix + entry + suffix)
                except (Failed, NotADirectoryError, FileNotFoundError):
                    pass
    return dict(sorted(files.items()))


def _domain_names(request, key, what):
    names = _list_of(request, key, what)
    for name in names:
        if not isinstance(name, str) or not DOMAIN_RE.fullmatch(name):
            raise Refused("bad domain folder name", "%s: %r is not a domain" % (what, name))
    return names


def op_state(request, tree, options):
    """Hashes of the managed files. With "domains": the server-wide files and
    only those domain folders, so a one-domain apply does not hash 50,000 files."""
    _expect_keys(request, ("op", "domains"), "state")
    only_domains = _domain_names(request, "domains", "state") if "domains" in request else None
    return OK, {"ok": True, "files": managed_hashes(tree, only_domains)}


def sync_plan(request, tree, writes, removes):
    """apply with "sync_domains": the writes are the complete wanted content of
    those domains' files (their folders, their SnappyMail domain configs:
    managed.synced_domain). Unchanged files are skipped, those domains'
    managed files that are not written are removed: one round trip for a
    one-domain apply instead of state + apply."""
    domains = _domain_names(request, "sync_domains", "apply")
    for path, _rule, _content in writes:
        if managed.synced_domain(path) not in domains:
            raise Refused("outside allowlist", "%r: not a file of a synced domain" % path)
    live = managed_hashes(tree, domains)
    wanted = {path for path, _rule, _content in writes}
    kept = [
        (path, rule, content)
        for path, rule, content in writes
        if live.get(path) != hashlib.sha256(content).hexdigest()
    ]
    stale = sorted(p for p in live if managed.synced_domain(p) in domains and p not in wanted)
    server_files = sorted(p for p in live if managed.synced_domain(p) is None)
    return kept, sorted(set(removes) | set(stale)), server_files


def op_reload(request, tree, options):
    _expect_keys(request, ("op", "services"), "reload")
    services = _services(_list_of(request, "services", "reload"))
    ok, results = reload_services(services, tree, options.service_command)
    answer = {"ok": ok, "reloads": results}
    if not ok:
        answer["error"] = "reload failed: %s" % ", ".join(
            s for s, r in results.items() if not r["ok"]
        )
    return (OK if ok else FAILED), answer


def code_plan(tree, code_files):
    """The rendered code files that differ from the live ones, and the live
    code files no longer rendered (SnappyMail uninstalled)."""
    writes = []
    for path, spec in sorted(code_files.items()):
        found = tree.read(path)
        if found is None or found[0] != spec.content:
            writes.append((path, check_path(path), spec.content))
    removes = [
        path
        for path in managed.CODE_FILES
        if path not in code_files and tree.read(path) is not None
    ]
    return writes, removes


def op_apply(request, tree, options):
    writes, removes, services, code_files, sni_skipped = parse_apply(request, tree, options)
    server_files = None
    if "sync_domains" in request:
        writes, removes, server_files = sync_plan(request, tree, writes, removes)
    if code_files is not None:
        code_writes, code_removes = code_plan(tree, code_files)
        writes += code_writes
        removes += code_removes
        services = _services(services + [r.service for _, r, _ in code_writes if r.service])

    # 1. the code files that change, checked by their daemon's own parser
    validation = {}
    for path, rule, content in writes:
        if rule.kind == CODE:
            ok, output = VALIDATORS[rule.check](content)
            validation[path] = {"ok": ok, "output": output}
    failed = [p for p, r in validation.items() if not r["ok"]]
    if failed:
        return FAILED, {
            "ok": False,
            "stage": "validate",
            "error": "validation failed, nothing changed: %s" % ", ".join(failed),
            "validation": validation,
            "written": [],
            "removed": [],
            "reloads": {},
        }

    for dirpath in sorted(
        {posixpath.dirname(p) for p, _, _ in writes}
        | {posixpath.dirname(p) for p in removes}
    ):
        tree.remove_stale_temps(dirpath)
    ensure_roundcube_des_key(tree, writes)

    created_dirs = []  # folders made for this request, parents first
    temps = []  # (path, dirpath, tmp name)

    def discard_temps():
        for path, dirpath, tmp in temps:
            tree.unlink(dirpath + "/" + tmp)
        for dirpath in reversed(created_dirs):
            tree.rmdir_if_empty(dirpath)

    # candidates next to the live files, with their final owner and mode
    try:
        for path, rule, content in writes:
            tmp = tree.write_temp(
                path, content, rule.owner, rule.group, rule.mode, created_dirs
            )
            temps.append((path, posixpath.dirname(path), tmp))
    except BaseException:
        discard_temps()
        raise

    # 2. backups of everything about to change (None = did not exist)
    try:
        backups = {p: tree.read(p) for p in [w[0] for w in writes] + removes}
    except BaseException:
        discard_temps()
        raise

    # 3. swap, then removals
    written, removed, removed_dirs = [], [], []
    try:
        for path, dirpath, tmp in list(temps):
            tree.replace(dirpath, tmp, posixpath.basename(path))
            temps.remove((path, dirpath, tmp))
            written.append(path)
        for path in removes:
            if tree.unlink(path):
                removed.append(path)
        for dirpath in sorted({posixpath.dirname(p) for p in removes}, reverse=True):
            rule = dir_rule(dirpath)
            if rule and rule.remove_when_empty and tree.rmdir_if_empty(dirpath):
                removed_dirs.append(dirpath)
    except BaseException as e:
        discard_temps()
        restored, errors = restore(tree, backups, written + removed, created_dirs)
        if not isinstance(e, (OSError, Failed)):
            raise
        return FAILED, {
            "ok": False,
            "stage": "swap",
            "error": "swapping files failed, previous files restored: %s"
            % (e.message if isinstance(e, Failed) else e),
            "restored": restored,
            "restore_errors": errors,
            "validation": validation,
            "written": [],
            "removed": [],
            "reloads": {},
        }

    # 4. reloads; a failure puts every previous file back and reloads again
    ok, reloads = reload_services(services, tree, options.service_command)
    answer = {
        "ok": ok,
        "written": written,
        "removed": removed,
        "reloads": reloads,
    }
    if server_files is not None:
        answer["server_files"] = server_files
    if sni_skipped:
        # names left on the server's certificate, and why (the panel shows it)
        answer["sni_skipped"] = sni_skipped
    if removed_dirs:
        answer["removed_dirs"] = removed_dirs
    if validation:
        answer["validation"] = validation
    if ok:
        if code_files is not None:
            # the code files are now rendered from the index: a removed
            # domain's certificate is named nowhere any more
            deleted, kept = prune_domain_certificates(tree, options)
            if deleted:
                answer["certificates_deleted"] = deleted
            if kept:
                answer["certificates_kept"] = kept
        return OK, answer

    failed_service = next(s for s, r in reloads.items() if not r["ok"])
    restored, errors = restore(tree, backups, written + removed, created_dirs)
    again_ok, again = reload_services(list(reloads), tree, options.service_command)
    answer.update(
        stage="reload",
        error="reload of %s failed; previous files restored%s"
        % (
            failed_service,
            "" if again_ok else " but reloading them failed too",
        ),
        written=[],
        removed=[],
        restored=restored,
        restore_errors=errors,
        reloads_after_restore=again,
    )
    answer.pop("removed_dirs", None)
    return FAILED, answer


def ensure_roundcube_des_key(tree, writes):
    """Roundcube's des_key (it encrypts the IMAP password in the session):
    made here, once, the first time Roundcube's config is written, with the
    config's owner and mode (the webmail's PHP user reads it). Never in a
    request or an answer; kept when Roundcube is switched off and on again."""
    if not any(path == managed.ROUNDCUBE_CONFIG for path, _rule, _content in writes):
        return
    key_path = managed.ROUNDCUBE_DES_KEY
    if tree.read(key_path) is not None:
        return
    rule = check_path(managed.ROUNDCUBE_CONFIG)
    # Roundcube's cipher (DES-EDE3-CBC) takes exactly 24 bytes.
    key = secrets.token_urlsafe(18).encode("ascii") + b"\n"
    tmp = tree.write_temp(key_path, key, rule.owner, rule.group, rule.mode, [])
    tree.replace(posixpath.dirname(key_path), tmp, posixpath.basename(key_path))


def restore(tree, backups, paths, created_dirs):
    """Put back the live files saved before the swap (and delete the ones that
    did not exist). Returns (restored paths, errors)."""
    restored, errors = [], []
    for path in paths:
        backup = backups.get(path)
        try:
            if backup is None:
                tree.unlink(path)
            else:
                content, st = backup
                dirpath, name = posixpath.split(path)
                rule = check_path(path)
                # back exactly as it was, even if the table changed meanwhile
                tmp = tree.write_temp(
                    path, content, rule.owner, rule.group, rule.mode, [],
                    exact=(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                )
                tree.replace(dirpath, tmp, name)
            restored.append(path)
        except (OSError, Failed, Refused) as e:
            errors.append("%s: %s" % (path, getattr(e, "message", e)))
    for dirpath in reversed(created_dirs):
        try:
            tree.rmdir_if_empty(dirpath)
        except (OSError, Failed) as e:
            errors.append("%s: %s" % (dirpath, getattr(e, "message", e)))
    return restored, errors


def op_read(request, tree, options):
    _expect_keys(request, ("op", "path"), "read")
    path = request.get("path")
    check_path(path)
    if path not in READABLE_FILES:
        raise Refused(
            "not readable",
            "%r: the helper returns only %s" % (path, ", ".join(READABLE_FILES)),
        )
    tree.refuse_symlinks(path)
    found = tree.read(path)
    if found is None:
        return OK, {"ok": True, "exists": False}
    return OK, {
        "ok": True,
        "exists": True,
        "content_b64": base64.b64encode(found[0]).decode("ascii"),
    }


def tarball_members(tar):
    """The members to unpack, checked before anything is written: regular
    files and folders with relative names, no '..', no links that leave the
    tree, no hard links, no device files or FIFOs. Refuses naming the rule."""
    members, names, links, total = [], set(), {}, 0
    for member in tar:
        if len(members) >= MAX_TARBALL_MEMBERS:
            raise Refused("tarball too large", "more than %d entries" % MAX_TARBALL_MEMBERS)
        raw = member.name
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw + member.linkname):
            raise Refused("control character in tarball", "%r: control character in a name" % raw)
        if raw.startswith("/"):
            raise Refused("absolute path in tarball", "%r: absolute name" % raw)
        name = raw
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        if not name or name == ".":
            continue
        if ".." in name.split("/"):
            raise Refused("'..' in tarball", "%r: '..' is not allowed" % raw)
        if posixpath.normpath(name) != name:
            raise Refused("non-normalised name in tarball", "%r: not a normalised name" % raw)
        if member.islnk():
            raise Refused("hard link in tarball", "%r: hard links are not unpacked" % raw)
        if member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            # No ".." at all: with links elsewhere in the tree, "a/../b" can
            # mean something else on disk than on paper.
            if not target or target.startswith("/") or ".." in target.split("/"):
                raise Refused(
                    "symlink leaving the tree",
                    "%r -> %r: a link must point down into the release" % (raw, target),
                )
            links[name] = resolved
        elif not (member.isfile() or member.isdir()):
            raise Refused(
                "device file in tarball",
                "%r: only files, folders and links inside the tree are unpacked" % raw,
            )
        if name in names:
            raise Refused("duplicate name in tarball", "%r: listed twice" % raw)
        names.add(name)
        if member.isfile():
            total += member.size
            if total > MAX_TARBALL_UNPACKED_BYTES:
                raise Refused(
                    "tarball too large",
                    "unpacks to more than %d bytes" % MAX_TARBALL_UNPACKED_BYTES,
                )
        members.append((name, member))
    if "index.php" not in names:
        raise Refused("not a SnappyMail release", "the tarball has no index.php at its top")
    for name, _member in members:
        through = _first_link_on_the_way(name, links, include_self=False)
        if through:
            raise Refused("path through a link in tarball", "%r: passes through the link %r" % (name, through))
    for name, resolved in links.items():
        through = _first_link_on_the_way(resolved, links, include_self=True)
        if through:
            raise Refused("link chain in tarball", "%r: points through the link %r" % (name, through))
    return members


def _first_link_on_the_way(path, links, include_self):
    """The first prefix of path (path itself too, if asked) that is a link."""
    parts = path.split("/")
    for end in range(1, len(parts) + (1 if include_self else 0)):
        prefix = "/".join(parts[:end])
        if prefix in links:
            return prefix
    return None


def _snappymail_owner(name):
    """Owner/mode for a path relative to the SnappyMail folder."""
    if name == "data" or name.startswith("data/"):
        return SNAPPYMAIL_DATA_OWNER
    return SNAPPYMAIL_CODE_OWNER


def _open_below(base_fd, relpath):
    """Open the folder relpath under base_fd without following any symlink."""
    fd = os.dup(base_fd)
    try:
        for part in [p for p in relpath.split("/") if p]:
            try:
                next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Failed("%s: a symlink or not a folder in the tarball" % relpath) from e
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def unpack_members(tar, members, tree, staging_fd):
    """Write the checked members below staging_fd (a fresh root-only folder)."""
    files = dirs = 0
    for name, member in members:
        parent, base = posixpath.split(name)
        # Folders a tarball lists only implicitly (a file before its folder).
        made = ""
        for part in [p for p in parent.split("/") if p]:
            made = made + "/" + part if made else part
            pfd = _open_below(staging_fd, posixpath.dirname(made))
            try:
                try:
                    os.mkdir(part, 0o700, dir_fd=pfd)
                except FileExistsError:
                    continue
                fd = os.open(part, DIR_FLAGS, dir_fd=pfd)
                try:
                    owner, group, dmode, _fmode = _snappymail_owner(made)
                    tree.set_owner(fd, owner, group, dmode)
                finally:
                    os.close(fd)
                dirs += 1
            finally:
                os.close(pfd)
        pfd = _open_below(staging_fd, parent)
        try:
            owner, group, dmode, fmode = _snappymail_owner(name)
            if member.isdir():
                try:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                    dirs += 1
                except FileExistsError:
                    pass  # made implicitly above; a file of that name fails to open
                fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
                try:
                    tree.set_owner(fd, owner, group, dmode)
                finally:
                    os.close(fd)
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=pfd)
                if tree.chown:
                    os.chown(
                        base,
                        pwd.getpwnam(owner).pw_uid,
                        grp.getgrnam(group).gr_gid,
                        dir_fd=pfd,
                        follow_symlinks=False,
                    )
                files += 1
            else:
                source = tar.extractfile(member)
                fd = os.open(
                    base,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=pfd,
                )
                try:
                    while True:
                        chunk = source.read(1 << 20)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    tree.set_owner(fd, owner, group, fmode)
                finally:
                    os.close(fd)
                files += 1
        finally:
            os.close(pfd)
    return files, dirs


def _remove_tree(parent_fd, name):
    """rm -r of parent/name without following symlinks (shutil.rmtree with a
    dir_fd is symlink-attack resistant on Linux)."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


def op_install_tarball(request, tree, options):
    _expect_keys(request, ("op", "tarball_b64", "sha256"), "install_tarball")
    encoded, expected = request.get("tarball_b64"), request.get("sha256")
    if not isinstance(encoded, str) or not isinstance(expected, str):
        raise Refused("bad request", "tarball_b64 and sha256 must be strings")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Refused("bad request", "tarball_b64 is not base64") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise Refused(
            "checksum",
            "SHA-256 mismatch: expected %s, got %s; nothing installed" % (expected, actual),
        )
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise Refused("not a tarball", "cannot read the tarball: %s" % e) from e
    with tar:
        try:
            members = tarball_members(tar)
        except (tarfile.TarError, EOFError) as e:
            raise Refused("not a tarball", "cannot read the tarball: %s" % e) from e

        tree.refuse_symlinks(SNAPPYMAIL_DIR + "/data")
        parent, name = posixpath.split(SNAPPYMAIL_DIR)
        parent_fd = tree.open_dir(parent, create=True)
        staging = "." + name + STAGING_MARK + secrets.token_hex(6)
        old = None
        try:
            for entry in os.listdir(parent_fd):  # left by a killed helper
                if entry.startswith("." + name + STAGING_MARK):
                    _remove_tree(parent_fd, entry)
            os.mkdir(staging, 0o700, dir_fd=parent_fd)
            staging_fd = os.open(staging, DIR_FLAGS, dir_fd=parent_fd)
            kept_data = False
            try:
                try:
                    files, dirs = unpack_members(tar, members, tree, staging_fd)
                except (tarfile.TarError, EOFError) as e:
                    raise Failed("cannot unpack the tarball: %s" % e) from e
                # 2. an existing data/ folder (settings, users' data) moves over
                try:
                    live_fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
                except FileNotFoundError:
                    live_fd = None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Failed("%s: a symlink or not a folder" % SNAPPYMAIL_DIR) from e
                    raise
                if live_fd is not None:
                    try:
                        try:
                            st = os.lstat("data", dir_fd=live_fd)
                        except FileNotFoundError:
                            st = None
                        if st is not None:
                            if not stat.S_ISDIR(st.st_mode):
                                raise Failed("%s/data: not a folder" % SNAPPYMAIL_DIR)
                            _remove_tree(staging_fd, "data")
                            os.rename("data", "data", src_dir_fd=live_fd, dst_dir_fd=staging_fd)
                            kept_data = True
                    finally:
                        os.close(live_fd)
                owner, group, dmode, _fmode = SNAPPYMAIL_CODE_OWNER
                tree.set_owner(staging_fd, owner, group, dmode)
            finally:
                os.close(staging_fd)
            # 3. swap: the old tree steps aside, the new one takes its name
            if os.path.lexists(tree.real(SNAPPYMAIL_DIR)):
                old = "." + name + STAGING_MARK + "old-" + secrets.token_hex(6)
                os.rename(name, old, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            try:
                os.rename(staging, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            except OSError:
                if old is not None:
                    os.rename(old, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
                    old = None
                raise
            staging = None
            os.fsync(parent_fd)
        except BaseException as e:
            # Put the live data/ back if it had moved into the staging tree.
            if staging is not None:
                try:
                    _move_data_back(parent_fd, staging, name)
                finally:
                    _remove_tree(parent_fd, staging)
            if isinstance(e, OSError):
                raise Failed("installing SnappyMail failed: %s" % e) from e
            raise
        finally:
            if old is not None:
                _remove_tree(parent_fd, old)
            os.close(parent_fd)
    return OK, {"ok": True, "files": files, "dirs": dirs, "kept_data": kept_data}


def _move_data_back(parent_fd, staging, name):
    """After a failed install: data/ goes back from the staging tree to the
    live SnappyMail folder if it had been moved there."""
    try:
        live_fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return
    try:
        try:
            os.lstat("data", dir_fd=live_fd)
            return  # still there: it never moved
        except FileNotFoundError:
            pass
        staging_fd = os.open(staging, DIR_FLAGS, dir_fd=parent_fd)
        try:
            os.rename("data", "data", src_dir_fd=staging_fd, dst_dir_fd=live_fd)
        except OSError:
            pass
        finally:
            os.close(staging_fd)
    finally:
        os.close(live_fd)


LOCAL_PART_RE = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")


def parse_maildirsize(content):
    """Maildir++ ``maildirsize``: line 1 is the limit, every further line a
    "bytes messages" delta; the sum is the usage. None if it is not that."""
    lines = content.decode("ascii", "replace").splitlines()[1:]
    used_bytes = used_messages = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
            return None
        used_bytes += int(parts[0])
        used_messages += int(parts[1])
    return {"bytes": max(used_bytes, 0), "messages": max(used_messages, 0)}


def op_quota_usage(request, tree, options):
    """What each mailbox of a domain uses, from Dovecot's maildirsize files.
    Numbers only: nothing of the mail itself leaves the helper."""
    _expect_keys(request, ("op", "domain"), "quota_usage")
    domain = request.get("domain")
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise Refused("bad domain folder name", "quota_usage: %r is not a domain" % (domain,))
    folder = "%s/%s" % (options.mail_root.rstrip("/"), domain)
    usage = {}
    for local in tree.listdir(folder):
        if not LOCAL_PART_RE.fullmatch(local):
            continue
        try:
            found = tree.read("%s/%s/Maildir/maildirsize" % (folder, local))
        except (Failed, NotADirectoryError):
            continue  # a symlink or not a folder: not ours to read
        if found is not None:
            parsed = parse_maildirsize(found[0])
            if parsed is not None:
                usage[local] = parsed
    return OK, {"ok": True, "usage": usage}


DELETED_MAIL = ".deleted"
DELETED_NAME_RE = re.compile(r"(?P<domain>[a-z0-9.-]+)-(?P<stamp>[0-9]{14})(?:-[0-9]+)?")


def op_move_mail_away(request, tree, options):
    """A deleted domain's Maildirs step aside into <mail root>/.deleted/
    <domain>-<UTC time> (root only), so whoever adds the name next starts
    empty; purge_deleted_mail removes them after the retention time."""
    _expect_keys(request, ("op", "domain"), "move_mail_away")
    domain = request.get("domain")
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise Refused("bad domain folder name", "move_mail_away: %r is not a domain" % (domain,))
    mail_root = options.mail_root.rstrip("/") or "/"
    try:
        root_fd = tree.open_dir(mail_root)
    except FileNotFoundError:
        return OK, {"ok": True, "moved_to": None}
    try:
        try:
            st = os.lstat(domain, dir_fd=root_fd)
        except FileNotFoundError:
            return OK, {"ok": True, "moved_to": None}
        if not stat.S_ISDIR(st.st_mode):
            raise Failed("%s/%s: not a folder" % (mail_root, domain))
        try:
            os.mkdir(DELETED_MAIL, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        deleted_fd = os.open(DELETED_MAIL, DIR_FLAGS, dir_fd=root_fd)
        try:
            os.fchmod(deleted_fd, 0o700)
            base = "%s-%s" % (domain, time.strftime("%Y%m%d%H%M%S", time.gmtime()))
            name, n = base, 1
            while True:
                try:
                    os.lstat(name, dir_fd=deleted_fd)
                except FileNotFoundError:
                    break
                n += 1
                name = "%s-%d" % (base, n)
            os.rename(domain, name, src_dir_fd=root_fd, dst_dir_fd=deleted_fd)
            os.fsync(deleted_fd)
        finally:
            os.close(deleted_fd)
        return OK, {"ok": True, "moved_to": "%s/%s/%s" % (mail_root, DELETED_MAIL, name)}
    finally:
        os.close(root_fd)


# Moving a domain to another node (mailadmin/services/domain_move.py): its
# mailboxes are copied with Dovecot's dsync, one-way ("doveadm sync -1"): new
# messages of the source are added to the destination, what arrived at the
# destination directly (forwarded, or by DNS already) stays, a message already
# there (the same GUID) is not copied again; run again, it copies only what
# is new. Where a peer's mail lives is root's choice in MAIL_PEERS_FILE, never
# the request's: the request names a peer, a domain and local parts.
#   {"<node name>": {"mail_root": "/var/mail/vhosts-b"}}
# mail_root: a real path on this machine (not under --root) -- a second node
# on the same host. A peer on another machine ({"host", "address", "port"},
# grammar in mailconf/peers.py): "doveadm sync -1 -u USER tcps:HOST:PORT" to
# its doveadm listener, with the nodes' shared password from root's
# DOVEADM_PASSWORD_FILE, which this node's dovecot.conf names.
MAIL_PEERS_FILE = "/etc/mailpanel/mail-peers.json"
DOVEADM_PASSWORD_FILE = "/etc/mailpanel/doveadm.password"
NODE_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
MAX_SYNC_MAILBOXES = 10000
SYNC_TIMEOUT = 800  # one mailbox; below the panel's wait (domain_move.MAILBOX_TIMEOUT_SECONDS)


def _root_program(name):
    """A program root may run: found on SAFE_PATH, and (as root) owned by
    root and writable by nobody else, like every folder above it."""
    path = _program(name)
    if os.geteuid() == 0:
        real = os.path.realpath(path)
        while True:
            st = os.stat(real)
            if st.st_uid != 0 or _writable_by_others(st):
                raise Failed("%s: not owned and writable by root only" % real)
            if real == "/":
                break
            real = os.path.dirname(real)
    return path


def load_mail_peers(tree):
    """Root's MAIL_PEERS_FILE parsed under its grammar (mailconf/peers.py);
    no file = no peers. As root it must belong to root and be writable by
    nobody else (Failed otherwise, like a broken file)."""
    from mailconf.peers import MAX_PEERS_BYTES, NO_PEERS, parse_mail_peers

    found = tree.read(MAIL_PEERS_FILE, MAX_PEERS_BYTES)
    if found is None:
        return NO_PEERS
    content, st = found
    if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
        raise Failed("%s: must belong to root and be writable only by root" % MAIL_PEERS_FILE)
    try:
        return parse_mail_peers(content)
    except ValueError as e:
        raise Failed("%s: %s" % (MAIL_PEERS_FILE, e)) from e


def doveadm_password(tree):
    """Check root's shared doveadm password file (never read into a reply or
    a log): present, as root root's and readable by root only, one line
    under its grammar. Dovecot reads it itself (doveadm_password = <FILE)."""
    from mailconf.peers import check_password

    found = tree.read(DOVEADM_PASSWORD_FILE, 4096)
    if found is None:
        raise Failed("no %s: the doveadm listener for the mail peers needs the nodes' shared "
                     "password there (root:root 0600)" % DOVEADM_PASSWORD_FILE)
    content, st = found
    if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o077):
        raise Failed("%s: must belong to root and be readable only by root (0600)" % DOVEADM_PASSWORD_FILE)
    try:
        check_password(content)
    except ValueError as e:
        raise Failed(str(e)) from e


def mail_peer(tree, name):
    """The peer (mailconf.peers.LocalPeer or RemotePeer) named in root's
    MAIL_PEERS_FILE; Refused when there is none of that name."""
    found = load_mail_peers(tree)
    peer = found.get(name)
    if peer is None:
        raise Refused("unknown peer", "%r: not a peer in %s" % (name, MAIL_PEERS_FILE))
    return peer


def op_sync_mail(request, tree, options):
    _expect_keys(request, ("op", "domain", "local_parts", "peer"), "sync_mail")
    domain, peer = request.get("domain"), request.get("peer")
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise Refused("bad domain folder name", "sync_mail: %r is not a domain" % (domain,))
    if not isinstance(peer, str) or not NODE_NAME_RE.fullmatch(peer):
        raise Refused("bad peer", "sync_mail: %r is not a node name" % (peer,))
    local_parts = request.get("local_parts")
    if (not isinstance(local_parts, list) or len(local_parts) > MAX_SYNC_MAILBOXES
            or not all(isinstance(x, str) and len(x) <= 64 and LOCAL_PART_RE.fullmatch(x)
                       for x in local_parts)):
        raise Refused("bad local part", "sync_mail: local_parts must be a list of mailbox names")
    found = mail_peer(tree, peer)
    peer_root = getattr(found, "mail_root", None)
    if peer_root is None:
        # Another machine: TLS to its doveadm listener, with the shared
        # password that this node's dovecot.conf names (root's file).
        doveadm_password(tree)
    elif peer_root.rstrip("/") == tree.real(options.mail_root.rstrip("/")):
        raise Refused("unknown peer", "sync_mail: %s is this node's own mail root" % peer_root)
    present = set(tree.listdir("%s/%s" % (options.mail_root.rstrip("/"), domain)))
    argv = [_root_program("doveadm")]
    if tree.root:
        argv += ["-c", tree.real(DOVECOT_CONF)]
    synced, missing = [], []
    for local in sorted(set(local_parts)):
        if local not in present:
            missing.append(local)  # never received mail here: nothing to copy
            continue
        if STOP_REQUESTED:
            raise Failed("stopped after syncing %s" % (", ".join(synced) or "nothing"),
                         synced=synced)
        destination = (found.destination if peer_root is None
                       else "maildir:%s/%s/%s/Maildir" % (peer_root, domain, local))
        code, stdout, stderr = _run(argv + ["sync", "-1", "-u", "%s@%s" % (local, domain), destination],
                                    SYNC_TIMEOUT)
        if code != 0:
            raise Failed("doveadm sync of %s@%s failed: %s"
                         % (local, domain, _truncate(stdout + stderr) or "status %s" % code),
                         synced=synced)
        synced.append(local)
    return OK, {"ok": True, "synced": synced, "missing": missing}


def op_purge_deleted_mail(request, tree, options):
    """Remove the Maildirs of deleted domains moved away more than
    older_than_days ago."""
    _expect_keys(request, ("op", "older_than_days"), "purge_deleted_mail")
    days = request.get("older_than_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
        raise Refused("bad request", "older_than_days must be a whole number of days, 0 to 3650")
    cutoff = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - days * 86400))
    purged = []
    try:
        deleted_fd = tree.open_dir(options.mail_root.rstrip("/") + "/" + DELETED_MAIL)
    except FileNotFoundError:
        return OK, {"ok": True, "purged": []}
    try:
        for name in sorted(os.listdir(deleted_fd)):
            match = DELETED_NAME_RE.fullmatch(name)
            if match and match["stamp"] < cutoff:
                _remove_tree(deleted_fd, name)
                purged.append(name)
    finally:
        os.close(deleted_fd)
    return OK, {"ok": True, "purged": purged}


# --------------------------------------------------------------------------
# The mail queue, the logs and IMAP sessions. Exim's spool and logs belong to
# its user and hold other people's mail: only root (or Exim) may read them, so
# the panel asks here. Where they are comes from the helper's Layout, never
# from the request; message ids are checked against Exim's format (fullmatch)
# before they reach an Exim command line, and Exim gets only the options in
# QUEUE_ACTIONS. Files are opened without following links, one at a time,
# and what comes back is bounded.

# 4.96: 1xXECy-00081o-0g (time, pid, fraction); 4.97+: 1xXECy-000000081o-0000.
MESSAGE_ID_RE = re.compile(
    r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"
)
QUEUE_ACTIONS = {
    "deliver": "-M",  # thaws a frozen message and delivers it now
    "freeze": "-Mf",
    "thaw": "-Mt",
    "delete": "-Mrm",  # no bounce
    "bounce": "-Mg",  # give up: the sender gets a bounce
}
MAX_QUEUE_IDS = 1000
MAX_QUEUE_PAGE = 200
MAX_FILTER_CHARS = 320
MAX_SPOOL_HEADER_BYTES = 1024 * 1024
MAX_SHOWN_HEADER_BYTES = 64 * 1024
MAX_SHOWN_BODY_BYTES = 64 * 1024
EXIM_ACTION_TIMEOUT = 30
# acl_m variables the ACL leaves in a held message's spool header
# (mailconf.render.exim: HELD_VARIABLE, SENDER_VARIABLE).
HELD_ACL_VARIABLE = "_mp_held"
SENDER_ACL_VARIABLE = "_mp_sender"
EXIM_CONF = "/etc/exim4/exim4.conf"
DOVECOT_CONF = "/etc/dovecot/dovecot.conf"
DOVECOT_SYSLOG = "/var/log/mail.log"


def _printable(value, what, required=True):
    """A short filter or search string: no control characters, bounded."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > MAX_FILTER_CHARS:
        raise Refused("bad request", "%s must be a string of at most %d characters"
                      % (what, MAX_FILTER_CHARS))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Refused("control character", "%s: control characters are not allowed" % what)
    return value


def _whole_number(request, key, default, low, high):
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused("bad request", "%s must be a whole number from %d to %d" % (key, low, high))
    return value


def _message_ids(value):
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_QUEUE_IDS:
        raise Refused("bad request", "ids must be a list of 1 to %d message ids" % MAX_QUEUE_IDS)
    for item in value:
        if not isinstance(item, str) or not MESSAGE_ID_RE.fullmatch(item):
            raise Refused("bad message id", "%r: not an Exim message id" % (item,))
    return sorted(set(value))


def _open_spool_input(tree, layout):
    """A descriptor of the spool's input folder (the Layout's spool), or None
    when there is none yet."""
    try:
        fd = tree.open_dir(layout.spool_dir.rstrip("/") + "/input")
    except FileNotFoundError:
        return None
    except Failed:
        raise Failed("the spool's input folder is a symlink or not a folder")
    return fd


def _spool_entries(input_fd):
    """(sub folder or "", message id) of every message in the queue."""
    found = []
    for name in os.listdir(input_fd):
        if name.endswith("-H") and MESSAGE_ID_RE.fullmatch(name[:-2]):
            found.append(("", name[:-2]))
        elif len(name) == 1 and name.isalnum():
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=input_fd)
            except OSError:
                continue
            try:
                for inner in os.listdir(sub):
                    if inner.endswith("-H") and MESSAGE_ID_RE.fullmatch(inner[:-2]):
                        found.append((name, inner[:-2]))
            finally:
                os.close(sub)
    # Exim's ids start with the time in base 62, digits before upper before
    # lower case as in ASCII: sorted ids are the order of arrival.
    found.sort(key=lambda entry: entry[1])
    return found


def _read_spool_file(input_fd, sub, name, limit):
    """Bytes of one spool file (at most limit), or None when it went away
    (delivered meanwhile). A link or anything but a plain file is refused."""
    dfd = input_fd
    if sub:
        try:
            dfd = os.open(sub, DIR_FLAGS, dir_fd=input_fd)
        except OSError:
            return None
    try:
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return None
            # one read for a whole small file (a queue scan reads thousands)
            want = min(st.st_size, limit)
            data = os.read(fd, want)
            while len(data) < want:
                chunk = os.read(fd, want - len(data))
                if not chunk:
                    break
                data += chunk
            return data, st
        finally:
            os.close(fd)
    finally:
        if sub:
            os.close(dfd)


def _text(raw):
    return raw.decode("utf-8", "replace")


def parse_spool_header(data, message_id, with_headers=False):
    """An Exim -H file (spec: "Format of spool files") as a dict, or None
    when it is not one. Recipients already delivered (the non-recipients
    tree) are left out."""
    pos = 0

    def line():
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError("truncated")
        text = data[pos:end]
        pos = end + 1
        return text

    try:
        if line() != (message_id + "-H").encode():
            return None
        login = _text(line()).split(" ")[0]
        sender = _text(line())
        if not (sender.startswith("<") and sender.endswith(">")):
            return None
        received = int(line().split(b" ")[0])
        info = {
            "id": message_id, "login": login, "sender": sender[1:-1], "received": received,
            "frozen": False, "held": "", "sender_key": "", "host_address": "", "ident": "",
            "auth_id": "", "helo": "",
        }
        while data[pos:pos + 1] == b"-":
            option = _text(line()).lstrip("-")
            name, _sep, value = option.partition(" ")
            if name in ("aclm", "aclc", "acl"):
                var, _sep, length = value.rpartition(" ")
                length = int(length)
                content = _text(data[pos:pos + length])
                pos += length + 1
                if name == "aclm" and var == HELD_ACL_VARIABLE:
                    info["held"] = content
                elif name == "aclm" and var == SENDER_ACL_VARIABLE:
                    info["sender_key"] = content
            elif name == "frozen":
                info["frozen"] = True
            elif name == "host_address":
                info["host_address"] = _host_address(value)
            elif name == "ident":
                info["ident"] = value
            elif name == "auth_id":
                info["auth_id"] = value
            elif name == "helo_name":
                info["helo"] = value
        delivered = set()
        pending = 1
        while pending:
            node = _text(line())
            if node == "XX":
                pending -= 1
                continue
            if len(node) < 3 or node[0] not in "YN" or node[1] not in "YN" or node[2] != " ":
                return None
            delivered.add(node[3:])
            pending += (node[0] == "Y") + (node[1] == "Y") - 1
        count = int(line())
        recipients = []
        for _ in range(count):
            entry = _text(line())
            # "address errors_to len,pno#flags" when there is more than the address
            match = re.fullmatch(r"(\S+)(?: .*)? \d+,-?\d+#\d+", entry)
            address = match.group(1) if match else entry
            if address not in delivered:
                recipients.append(address)
        info["recipients"] = recipients
        info["delivered"] = count - len(recipients)
        if with_headers:
            if line() != b"":
                return None
            headers = []
            while pos < len(data):
                match = re.match(rb"(\d{3,})(.) ", data[pos:pos + 16])
                if not match:
                    break
                length = int(match.group(1))
                start = pos + match.end()
                if match.group(2) != b"*":  # "*": a header Exim deleted
                    headers.append(_text(data[start:start + length]).rstrip("\n"))
                pos = start + length
            info["headers"] = headers
    except (ValueError, IndexError):
        return None
    return info


def _host_address(value):
    """-host_address without its port: "[ip]:port" (Exim 4.96 from a real
    connection), "ip.port" (older spools), or a bare ip (-oMa)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f.:]+)\]:\d+", value)
    if match:
        return match.group(1)
    address, dot, port = value.rpartition(".")
    if dot and port.isdigit() and (":" in address or address.count(".") == 3):
        return address
    return value


def _domain_of(address):
    return address.rpartition("@")[2].lower()


def _queue_filter(request):
    """The list filters, checked: (sender, recipient, domains, frozen, held,
    sender_key)."""
    sender = _printable(request.get("sender"), "sender", required=False).lower()
    recipient = _printable(request.get("recipient"), "recipient", required=False).lower()
    domains = frozenset(_domain_names(request, "domains", "queue_list")) if "domains" in request else None
    flags = {}
    for key in ("frozen", "held"):
        value = request.get(key)
        if value is not None and not isinstance(value, bool):
            raise Refused("bad request", "%s must be true, false or null" % key)
        flags[key] = value
    key = _printable(request.get("sender_key"), "sender_key", required=False).lower()
    return sender, recipient, domains, flags["frozen"], flags["held"], key


def _matches(info, sender, recipient, domains, frozen, held, key):
    if frozen is not None and info["frozen"] != frozen:
        return False
    if held is not None and bool(info["held"]) != held:
        return False
    if key and info["sender_key"].lower() != key:
        return False
    if sender and sender not in info["sender"].lower():
        return False
    if recipient and not any(recipient in r.lower() for r in info["recipients"]):
        return False
    if domains is not None:
        if _domain_of(info["sender"]) not in domains and not any(
            _domain_of(r) in domains for r in info["recipients"]
        ):
            return False
    return True


def _might_match(data, sender, recipient, domains, frozen, held, key):
    """A look at the raw -H bytes before parsing them (most of a filtered
    scan of thousands of messages ends here): False only when the message
    cannot match. Option lines are the only ones that start with "-" (header
    lines start with their length, addresses hold no blank), and the ACL's
    held marker is set from a literal, so never tainted ("--aclm")."""
    if frozen is not None and (b"\n-frozen " in data) != frozen:
        return False
    if held is not None and (b"\n-aclm _mp_held " in data) != held:
        return False
    if sender or recipient or key or domains is not None:
        lower = data.lower()
        for text in (sender, recipient, key):
            if text and text.encode("utf-8") not in lower:
                return False
        if domains is not None and domains_bytes(domains).isdisjoint(_AT_DOMAIN_RE.findall(lower)):
            return False
    return True


_AT_DOMAIN_RE = re.compile(rb"@([a-z0-9.-]+)")
_DOMAINS_BYTES = {}


def domains_bytes(domains):
    """The filter's domains (a frozenset) as bytes, made once per request: a
    customer with hundreds of domains costs one set lookup per address."""
    if domains not in _DOMAINS_BYTES:
        _DOMAINS_BYTES.clear()
        _DOMAINS_BYTES[domains] = frozenset(d.encode() for d in domains)
    return _DOMAINS_BYTES[domains]


def _queue_messages(tree, layout, filters):
    """[(sub folder, info)] of every message matching filters, oldest first."""
    input_fd = _open_spool_input(tree, layout)
    if input_fd is None:
        return []
    try:
        found = []
        for sub, message_id in _spool_entries(input_fd):
            read = _read_spool_file(input_fd, sub, message_id + "-H", MAX_SPOOL_HEADER_BYTES)
            if read is None or not _might_match(read[0], *filters):
                continue
            info = parse_spool_header(read[0], message_id)
            if info is not None and _matches(info, *filters):
                found.append((sub, info))
        return found
    finally:
        os.close(input_fd)


def _queue_page(tree, layout, filters, offset, limit):
    """(total, frozen, held, [(sub folder, info)] of one page): the messages
    matching filters, oldest first. Without a filter only the page's
    messages are read; with one, every envelope comes from the envelope
    cache (QueueCache), which reads only the -H files that changed."""
    input_fd = _open_spool_input(tree, layout)
    if input_fd is None:
        return 0, 0, 0, []
    try:
        if filters == ("", "", None, None, None, ""):
            entries = _spool_entries(input_fd)
            page = []
            for sub, message_id in entries[offset:offset + limit]:
                read = _read_spool_file(input_fd, sub, message_id + "-H", MAX_SPOOL_HEADER_BYTES)
                info = read and parse_spool_header(read[0], message_id)
                if info:
                    page.append((sub, info))
            return len(entries), None, None, page
        cache = QueueCache(tree, tree.real(layout.spool_dir.rstrip("/") + "/input"))
        matched, frozen, held = [], 0, 0
        for sub, info in cache.envelopes(input_fd):
            if _matches(info, *filters):
                matched.append((sub, info))
                frozen += info["frozen"]
                held += bool(info["held"])
        cache.save()
        return len(matched), frozen, held, matched[offset:offset + limit]
    finally:
        os.close(input_fd)


# The queue's envelopes as of the last filtered page, so that the next one
# reads only the -H files that changed since (Exim writes a new -H file and
# renames it over the old one whenever a message's state changes). A stat of
# 5,000 files is about 10 ms; opening and reading them all is 60-90 ms.
# Root's own file in a folder only root can enter: it holds every address in
# the queue. Anything odd about it (a link, another owner, a group or world
# bit, a second hard link, too big, a checksum or shape that does not fit) and
# it is ignored and rebuilt from the spool; a folder that is not root's own
# (or a link) is not used at all.
QUEUE_CACHE_NAME = "queue-envelopes"
QUEUE_CACHE_MAGIC = b"mailpanel-queue-envelopes 1 "
MAX_QUEUE_CACHE_BYTES = 256 * 1024 * 1024
ENVELOPE_FIELDS = ("login", "sender", "received", "frozen", "held", "sender_key", "host_address",
                   "ident", "auth_id", "helo", "recipients", "delivered")
ENVELOPE_TYPES = (str, str, int, bool, str, str, str, str, str, str, list, int)
# sub folder, inode, mtime_ns, ctime_ns, size: the -H file the fields were read from
CACHE_KEY_TYPES = (str, int, int, int, int)
CACHE_ENTRY_TYPES = CACHE_KEY_TYPES + ENVELOPE_TYPES


def _cache_key(sub, st):
    return [sub, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size]


def _envelope(message_id, entry):
    info = dict(zip(ENVELOPE_FIELDS, entry[5:]))
    info["id"] = message_id
    return info


# A folder's times have the kernel clock's coarse resolution: a change in the
# same tick as the key was taken could leave the same mtime behind. A key is
# kept only once the folder has not changed for this long.
SETTLED_NS = 2 * 10 ** 9


def _settled_folder_key(fd):
    st = os.fstat(fd)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < SETTLED_NS:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


class QueueCache(RootCache):
    name, magic, limit = QUEUE_CACHE_NAME, QUEUE_CACHE_MAGIC, MAX_QUEUE_CACHE_BYTES

    def __init__(self, tree, spool):
        self.spool = spool  # the spool it describes: another Layout, another cache
        self.entries = {}
        self.folder = None  # the spool folder's key when the entries were read
        super().__init__(tree)
        data = self.load()
        if data is not None:
            self.entries, self.folder = self._shape(data)

    def _shape(self, data):
        if data.get("spool") != self.spool:
            return {}, None
        entries = data.get("entries")
        if not isinstance(entries, dict) or not all(_cache_entry_ok(e) for e in entries.values()):
            return {}, None
        folder = data.get("folder")
        if folder is not None and (type(folder) is not list or tuple(map(type, folder)) != (int, int, int)):
            return {}, None
        return entries, folder

    def envelopes(self, input_fd):
        """[(sub folder, info)] of every message, oldest first: from the
        cache where its -H file is the one the cache read, else read now.
        When the spool folder itself has not changed since the cache was
        written (Exim creates, renames or removes a file there for every
        change of a message), the cache is the queue: no file is looked at."""
        folder = _settled_folder_key(input_fd)
        if folder is not None and folder == self.folder:
            return [(entry[0], _envelope(message_id, entry)) for message_id, entry in self.entries.items()]
        found, wanted = [], {}
        sub_fds = {"": input_fd}
        try:
            for sub, message_id in _spool_entries(input_fd):
                if sub not in sub_fds:
                    folder = None  # split spool: each sub folder would need its own key
                    try:
                        sub_fds[sub] = os.open(sub, DIR_FLAGS, dir_fd=input_fd)
                    except OSError:
                        continue
                name = message_id + "-H"
                try:
                    st = os.stat(name, dir_fd=sub_fds[sub], follow_symlinks=False)
                except OSError:
                    continue  # delivered meanwhile
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    continue  # a link: never read (_read_spool_file)
                entry = self.entries.get(message_id)
                if entry is None or entry[:5] != _cache_key(sub, st):
                    read = _read_spool_file(input_fd, sub, name, MAX_SPOOL_HEADER_BYTES)
                    info = read and parse_spool_header(read[0], message_id)
                    if not info:
                        continue
                    entry = _cache_key(sub, read[1]) + [info[f] for f in ENVELOPE_FIELDS]
                    self.changed = True
                wanted[message_id] = entry
                found.append((sub, _envelope(message_id, entry)))
        finally:
            for sub, fd in sub_fds.items():
                if sub:
                    os.close(fd)
        self.changed = self.changed or len(wanted) != len(self.entries) or folder != self.folder
        self.entries = wanted
        self.folder = folder
        return found

    def save(self):
        self.store({"spool": self.spool, "folder": self.folder, "entries": self.entries})


def _cache_entry_ok(entry):
    # map(type, ...) runs in C: checking 5,000 entries costs about a millisecond
    return (type(entry) is list and tuple(map(type, entry)) == CACHE_ENTRY_TYPES
            and set(map(type, entry[15])) <= {str})


def _with_size(tree, layout, page):
    """Each listed message's size on disk (header and data files: about
    what exim -bp shows), for one page only."""
    input_fd = _open_spool_input(tree, layout)
    if input_fd is None:
        return [info for _sub, info in page]
    try:
        out = []
        for sub, info in page:
            try:
                dfd = os.open(sub, DIR_FLAGS, dir_fd=input_fd) if sub else input_fd
                try:
                    size = sum(os.stat(info["id"] + part, dir_fd=dfd, follow_symlinks=False).st_size
                               for part in ("-H", "-D"))
                finally:
                    if sub:
                        os.close(dfd)
            except OSError:
                size = 0
            out.append(dict(info, size=size))
        return out
    finally:
        os.close(input_fd)


def op_queue_list(request, tree, options):
    """One page of the queue, oldest first, with filters. Envelope only."""
    _expect_keys(request, ("op", "offset", "limit", "sender", "recipient", "domains",
                           "frozen", "held", "sender_key"), "queue_list")
    offset = _whole_number(request, "offset", 0, 0, 10 ** 7)
    limit = _whole_number(request, "limit", 50, 0, MAX_QUEUE_PAGE)
    filters = _queue_filter(request)
    layout = load_layout(tree, options)
    total, frozen, held, page = _queue_page(tree, layout, filters, offset, limit)
    # frozen and held are null without a filter: counting them would read
    # every message for a page that shows 50
    return OK, {"ok": True, "total": total, "frozen": frozen, "held": held,
                "messages": _with_size(tree, layout, page)}


def op_queue_show(request, tree, options):
    """One message's envelope and headers; its body only when asked (at most
    MAX_SHOWN_BODY_BYTES)."""
    _expect_keys(request, ("op", "id", "body"), "queue_show")
    (message_id,) = _message_ids([request.get("id")])
    body = request.get("body", False)
    if not isinstance(body, bool):
        raise Refused("bad request", "body must be true or false")
    layout = load_layout(tree, options)
    input_fd = _open_spool_input(tree, layout)
    if input_fd is None:
        return OK, {"ok": True, "found": False}
    try:
        entry = next((e for e in _spool_entries(input_fd) if e[1] == message_id), None)
        read = entry and _read_spool_file(input_fd, entry[0], message_id + "-H", MAX_SPOOL_HEADER_BYTES)
        info = read and parse_spool_header(read[0], message_id, with_headers=True)
        if not info:
            return OK, {"ok": True, "found": False}
        shown, total = [], 0
        for header in info.pop("headers"):
            total += len(header)
            if total > MAX_SHOWN_HEADER_BYTES:
                shown.append("[...]")
                break
            shown.append(header)
        answer = {"ok": True, "found": True, "message": dict(info, headers=shown)}
        if body:
            data = _read_spool_file(input_fd, entry[0], message_id + "-D", MAX_SHOWN_BODY_BYTES + 200)
            text = b""
            if data is not None:
                # the first line is the file's own name
                text = data[0].partition(b"\n")[2][:MAX_SHOWN_BODY_BYTES]
            answer["body"] = _text(text)
            answer["body_truncated"] = data is not None and data[1].st_size > len(text) + len(message_id) + 3
        return OK, answer
    finally:
        os.close(input_fd)


MAX_HELD_TOP = 10


def op_held_senders(request, tree, options):
    """Every sender whose mail is held (frozen by the send-limit ACL): how
    many, why, the most frequent recipients and sources (the client IP, or
    the Unix user of a local submission) and the ids. For the periodic check."""
    _expect_keys(request, ("op",), "held_senders")
    layout = load_layout(tree, options)
    senders = {}
    for _sub, info in _queue_messages(tree, layout, ("", "", None, True, True, "")):
        key = info["sender_key"].lower()
        if not key:
            continue
        entry = senders.setdefault(key, {"sender_key": key, "count": 0, "reasons": set(),
                                         "recipients": {}, "sources": {}, "ids": [],
                                         "first": info["received"], "last": info["received"]})
        entry["count"] += 1
        entry["reasons"].add(info["held"])
        entry["last"] = max(entry["last"], info["received"])
        for address in info["recipients"]:
            entry["recipients"][address] = entry["recipients"].get(address, 0) + 1
        source = info["host_address"] or info["ident"] or info["login"]
        entry["sources"][source] = entry["sources"].get(source, 0) + 1
        if len(entry["ids"]) < MAX_QUEUE_IDS:
            entry["ids"].append(info["id"])

    def top(counts):
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [[name, n] for name, n in ranked[:MAX_HELD_TOP]]

    answer = []
    for key in sorted(senders):
        entry = senders[key]
        entry["reasons"] = sorted(entry["reasons"])
        entry["recipients"] = top(entry["recipients"])
        entry["sources"] = top(entry["sources"])
        answer.append(entry)
    return OK, {"ok": True, "senders": answer}


def _exim_argv(tree, *args):
    argv = [_program("exim")]
    if tree.root:
        # development and tests: the rendered config under --root, whose
        # spool_directory is there too (production uses Exim's default)
        argv += ["-C", tree.real(EXIM_CONF)]
    return argv + list(args)


def op_queue_action(request, tree, options):
    """deliver (now, thawing it), freeze, thaw, delete or bounce messages,
    named by id or by the held sender they came from (sender_key)."""
    _expect_keys(request, ("op", "action", "ids", "sender_key"), "queue_action")
    action = request.get("action")
    if not isinstance(action, str) or action not in QUEUE_ACTIONS:
        raise Refused("unknown action", "%r: not a queue action (allowed: %s)"
                      % (action, ", ".join(sorted(QUEUE_ACTIONS))))
    if ("ids" in request) == ("sender_key" in request):
        raise Refused("bad request", "name the messages by ids or by sender_key, not both")
    if "ids" in request:
        ids = _message_ids(request["ids"])
    else:
        key = _printable(request["sender_key"], "sender_key").lower()
        if not key:
            raise Refused("bad request", "sender_key must not be empty")
        layout = load_layout(tree, options)
        ids = [info["id"] for _sub, info in
               _queue_messages(tree, layout, ("", "", None, None, True, key))]
    if not ids:
        return OK, {"ok": True, "ids": [], "output": ""}
    if action == "deliver":
        # Delivery can take minutes (remote timeouts): thaw now, then let
        # Exim deliver in the background as a queue runner would.
        code, stdout, stderr = _run(_exim_argv(tree, QUEUE_ACTIONS["thaw"], *ids), EXIM_ACTION_TIMEOUT)
        try:
            subprocess.Popen(
                _exim_argv(tree, QUEUE_ACTIONS["deliver"], *ids),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", env={"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8"}, start_new_session=True,
            )
        except OSError as e:
            raise Failed("cannot start exim: %s" % e) from e
        code = 0  # "not frozen" from the thaw is no failure
    else:
        code, stdout, stderr = _run(_exim_argv(tree, QUEUE_ACTIONS[action], *ids), EXIM_ACTION_TIMEOUT)
    output = _truncate(stdout + stderr)
    if code is None:
        raise Failed("exim %s: %s" % (QUEUE_ACTIONS[action], output))
    # Exim exits non-zero when one of several ids was gone already: the
    # answer lists what it said for each.
    return OK, {"ok": True, "ids": ids, "status": code, "output": output}


# Dovecot user masks take * and ?: the address is matched whole, no wildcard,
# no leading "-" (it would be an option).
KICK_ADDRESS_RE = re.compile(r"(?=[^@]{1,64}@)[a-z0-9_+][a-z0-9_+-]*(?:\.[a-z0-9_+-]+)*@" + DOMAIN_RE.pattern)


def op_kick_mailbox(request, tree, options):
    """End a mailbox's IMAP/POP3 sessions (doveadm kick), after its password
    was reset."""
    _expect_keys(request, ("op", "address"), "kick_mailbox")
    address = request.get("address")
    if not isinstance(address, str) or len(address) > 320 or not KICK_ADDRESS_RE.fullmatch(address):
        raise Refused("bad address", "%r: not a mailbox address" % (address,))
    argv = [_program("doveadm")]
    if tree.root:
        argv += ["-c", tree.real(DOVECOT_CONF)]
    code, stdout, stderr = _run(argv + ["kick", address], EXIM_ACTION_TIMEOUT)
    output = _truncate(stdout + stderr)
    # doveadm kick: 0 = kicked, 68 (EX_NOUSER) = nobody was logged in
    if code not in (0, 68):
        raise Failed("doveadm kick failed: %s" % (output or "status %s" % code))
    return OK, {"ok": True, "kicked": code == 0, "output": output}


MAX_LOG_TERMS = 5
MAX_LOG_LINES = 2000
MAX_LOG_LINE_CHARS = 2000
MAX_LOG_BYTES = 512 * 1024 * 1024
# At most this long reading (the panel's client waits; no lock is held).
LOG_SEARCH_SECONDS = 8
MAX_JOINED = 200
SYSLOG_DOVECOT_RE = re.compile(r" dovecot(?:\[\d+\])?: ")
EXIM_LOG_ID_RE = re.compile(
    r"^\S+ \S+ (?:\[\d+\] )?(" + MESSAGE_ID_RE.pattern + r") "
)
LOG_MSGID_RE = re.compile(r"(?:\bid=|msgid=)<?([^\s<>]{1,250})>?")
ROTATED_LOG_RE = re.compile(r"(?P<base>[A-Za-z0-9_.-]+?)\.(?P<n>[0-9]{1,3})(?:\.gz)?")


def _log_files(tree, folder, base, days):
    """(name, gzipped) of base and its rotations changed within days, oldest
    first (Debian's logrotate: base, base.1, base.2.gz, ...)."""
    try:
        dfd = tree.open_dir(folder)
    except (FileNotFoundError, Failed):
        return None, []
    cutoff = time.time() - days * 86400
    files = []
    for name in os.listdir(dfd):
        number = -1
        if name != base:
            match = ROTATED_LOG_RE.fullmatch(name)
            if not match or match["base"] != base:
                continue
            number = int(match["n"])
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime >= cutoff:
            files.append((number, name))
    files.sort(reverse=True)
    return dfd, [(name, name.endswith(".gz")) for _n, name in files]


def _log_lines(dfd, name, gzipped, budget):
    """The lines of one log file (text), within budget[0] bytes."""
    import gzip

    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dfd)
    except OSError:
        return
    raw = os.fdopen(fd, "rb")
    with raw:
        st = os.fstat(raw.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            for line in stream:
                budget[0] -= len(line)
                if budget[0] < 0 or time.monotonic() > budget[1]:
                    budget.append("cut")
                    return
                yield line.decode("utf-8", "replace").rstrip("\n")
        except (OSError, EOFError):
            return


def op_log_search(request, tree, options):
    """Lines of Exim's main log and Dovecot's log that mention any of the
    terms (plain text, any case), then every line of the messages those
    lines are about (same Exim id or Message-ID): reception, routing, the
    remote answer and the final delivery or Sieve action."""
    _expect_keys(request, ("op", "terms", "days", "limit"), "log_search")
    terms = _list_of(request, "terms", "log_search")
    if not 1 <= len(terms) <= MAX_LOG_TERMS:
        raise Refused("bad request", "terms: 1 to %d search terms" % MAX_LOG_TERMS)
    needles = []
    for term in terms:
        term = _printable(term, "a search term").strip().lower()
        if len(term) < 3:
            raise Refused("bad request", "a search term needs at least 3 characters")
        needles.append(term)
    days = _whole_number(request, "days", 3, 1, 60)
    limit = _whole_number(request, "limit", 500, 1, MAX_LOG_LINES)
    layout = load_layout(tree, options)
    sources = [(layout.log_dir.rstrip("/"), "mainlog", "exim")]
    dovecot_log = layout.dovecot_log_path or DOVECOT_SYSLOG
    folder, _slash, base = dovecot_log.rpartition("/")
    sources.append((folder or "/", base, "dovecot"))
    budget = [MAX_LOG_BYTES, time.monotonic() + LOG_SEARCH_SECONDS]

    syslog = dovecot_log == DOVECOT_SYSLOG  # shared with other daemons

    def scan(ids, msgids):
        hits = []
        for folder, base, source in sources:
            dfd, files = _log_files(tree, folder, base, days)
            if dfd is None:
                continue
            try:
                for name, gzipped in files:
                    for text in _log_lines(dfd, name, gzipped, budget):
                        if source == "dovecot" and syslog and not SYSLOG_DOVECOT_RE.search(text):
                            continue
                        lower = text.lower()
                        match = EXIM_LOG_ID_RE.match(text) if source == "exim" else None
                        if (any(n in lower for n in needles)
                                or (match and match.group(1) in ids)
                                or any(m in msgids for m in LOG_MSGID_RE.findall(text))):
                            hits.append((source, text[:MAX_LOG_LINE_CHARS], match and match.group(1)))
            finally:
                os.close(dfd)
        return hits

    lines = scan(set(), set())
    # the messages those lines are about (the newest MAX_JOINED of them)
    ids, msgids = {}, {}  # ordered sets
    for source, text, exim_id in lines:
        if exim_id:
            ids[exim_id] = None
        for found in LOG_MSGID_RE.findall(text):
            if len(found) >= 6:
                msgids[found] = None
    if (ids or msgids) and "cut" not in budget:
        lines = scan(set(list(ids)[-MAX_JOINED:]), set(list(msgids)[-MAX_JOINED:]))
    lines = [(source, text) for source, text, _id in lines]
    truncated = len(lines) > limit or "cut" in budget
    return OK, {
        "ok": True,
        "lines": [{"source": s, "line": t} for s, t in lines[-limit:]],
        "truncated": truncated,
    }


# --------------------------------------------------------------------------
# TLS certificates. The panel orders them from an ACME CA unprivileged
# (mailadmin/services/certificates.py); the private keys never leave root:
# cert_key makes a domain's next key here and answers only its CSR,
# cert_install takes the CA's chain, checks that it is for that key and for
# names the CSR asked for (the domain's own, or the host name), swaps it in
# (the old certificate stays live until then), rewrites the SNI index
# (mailconf.tls) and reloads the daemons. Certificates from the request are
# parsed by openssl in the validators' sandbox (nobody, no network).
#
#   {"op": "cert_key", "domain": D | "server": true, "names": [N, ...]}
#       -> {"ok": true, "csr_pem": "..."}
#   {"op": "cert_install", "domain": D | "server": true, "chain_pem": "..."}
#       -> {"ok": true, "names": [...], "not_after": ISO, "issuer": S, "reloads": {...}}
#   {"op": "cert_remove", "domain": D}
#       -> {"ok": true, "removed": bool, "deleted": bool, "kept_until_apply": bool}
#       (out of the index at once; the files stay while a live code file names
#       them, and the next apply that renders the code files deletes them)

CERT_FILE_OWNER = ("root", "root", 0o644)
CERT_KEY_OWNER = ("root", "Debian-exim", 0o640)  # Exim reads it as Debian-exim
PENDING_OWNER = ("root", "root", 0o600)
PENDING_KEY = "privkey.pending.pem"
PENDING_NAMES = "pending_names"
CERT_RELOAD = ("exim4", "dovecot", "nginx")
CERT_KEY_BITS = 2048  # RSA: every mail client still in use speaks it
MAX_CERT_NAMES = 100  # Let's Encrypt's limit per order
MAX_CHAIN_BYTES = 64 * 1024
MAX_CHAIN_CERTS = 6
OPENSSL_TIMEOUT = 30
PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]{4,16384}?)-----END CERTIFICATE-----"
)


def _cert_target(request, tree, options, what):
    """(TLS folder, the certificate's folder, domain) for "domain": D, or
    (TLS folder, TLS folder, None) for "server": true (mailconf.tls)."""
    domain = request.get("domain")
    if request.get("server") is True and "domain" not in request:
        domain = None
    elif "server" in request or not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise Refused("bad request", '%s: give "domain" (a lower-case IDNA name) or "server": true' % what)
    if domain is None:
        return tls.TLS_DIR, tls.TLS_DIR, None
    return tls.TLS_DIR, tls.domain_folder(domain), domain


def _cert_names(names, domain):
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_CERT_NAMES:
        raise Refused("bad request", "cert_key: names must be a list of 1 to %d names" % MAX_CERT_NAMES)
    for name in names:
        if not isinstance(name, str) or not DOMAIN_RE.fullmatch(name):
            raise Refused("bad name", "cert_key: %r is not a lower-case host name" % (name,))
        if domain is not None and not _name_in_domain(name, domain):
            raise Refused("name outside the domain", "cert_key: %r is not a name of %s" % (name, domain))
    if len(set(names)) != len(names):
        raise Refused("bad request", "cert_key: a name is listed twice")
    return list(names)


def _name_in_domain(name, domain):
    return name == domain or name.endswith("." + domain)


def _openssl(args, stdin=b""):
    """Run openssl on root's own data (the key it just made): stdout bytes."""
    try:
        proc = subprocess.run(
            [_program("openssl")] + args, input=stdin, capture_output=True,
            timeout=OPENSSL_TIMEOUT, cwd="/", env={"PATH": SAFE_PATH, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired as e:
        raise Failed("openssl %s timed out" % args[0]) from e
    if proc.returncode != 0:
        raise Failed("openssl %s failed: %s" % (args[0], first_error_line(proc.stderr.decode("utf-8", "replace"))))
    return proc.stdout


def _put_file(tree, path, content, owner, created):
    """Write path atomically (temp, fsync, rename) with owner/group/mode."""
    tree.refuse_symlinks(path)
    tmp = tree.write_temp(path, content, owner[0], owner[1], owner[2], created)
    tree.replace(posixpath.dirname(path), tmp, posixpath.basename(path))


def op_cert_key(request, tree, options):
    _expect_keys(request, ("op", "domain", "server", "names"), "cert_key")
    _tls, folder, domain = _cert_target(request, tree, options, "cert_key")
    names = _cert_names(request.get("names"), domain)
    for name in (PENDING_KEY, PENDING_NAMES):
        tree.refuse_symlinks(folder + "/" + name)
    key = _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % CERT_KEY_BITS])
    # The names were checked above: no comma, slash or blank can reach the
    # subject or the extension. The CN is the shortest name that fits its 64
    # characters (CAs read the names from subjectAltName).
    short = min(names, key=len)
    subject = "/CN=%s" % short if len(short) <= 64 else "/"
    csr = _openssl(["req", "-new", "-key", "/dev/stdin", "-subj", subject,
                    "-addext", "subjectAltName=" + ",".join("DNS:" + n for n in names)], key)
    created = []
    _put_file(tree, folder + "/" + PENDING_KEY, key, PENDING_OWNER, created)
    _put_file(tree, folder + "/" + PENDING_NAMES, ("\n".join(names) + "\n").encode("ascii"), PENDING_OWNER, created)
    return OK, {"ok": True, "csr_pem": csr.decode("ascii")}


def parse_chain(text):
    """The DER certificates of a PEM chain, leaf first: nothing but
    CERTIFICATE blocks (blank space between them), each valid base64 of a DER
    SEQUENCE, within the size limits. Refuses naming the rule."""
    if not isinstance(text, str):
        raise Refused("bad request", "cert_install: chain_pem must be a string")
    raw = text.encode("utf-8", "replace")
    if len(raw) > MAX_CHAIN_BYTES:
        raise Refused("oversize", "cert_install: the chain is larger than %d bytes" % MAX_CHAIN_BYTES)
    ders, position = [], 0
    for match in PEM_BLOCK_RE.finditer(raw):
        if raw[position:match.start()].strip():
            raise Refused("not a certificate chain", "cert_install: text outside the CERTIFICATE blocks")
        position = match.end()
        try:
            der = base64.b64decode(re.sub(rb"\s", b"", match.group(1)), validate=True)
        except (binascii.Error, ValueError) as e:
            raise Refused("not a certificate chain", "cert_install: a block is not base64") from e
        if len(der) < 64 or der[0] != 0x30:
            raise Refused("not a certificate chain", "cert_install: a block is not a DER certificate")
        ders.append(der)
    if raw[position:].strip() or not ders:
        raise Refused("not a certificate chain", "cert_install: not a PEM certificate chain")
    if len(ders) > MAX_CHAIN_CERTS:
        raise Refused("oversize", "cert_install: more than %d certificates" % MAX_CHAIN_CERTS)
    return ders


def _pem(der):
    body = base64.b64encode(der).decode("ascii")
    return "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % "\n".join(
        body[i:i + 64] for i in range(0, len(body), 64))


def _sandboxed_x509(pem, args):
    code, stdout, stderr = run_sandboxed([_program("openssl"), "x509", "-in", "{file}", "-noout"] + args,
                                         pem.encode("ascii"), "cert.pem", timeout=OPENSSL_TIMEOUT)
    if code != 0:
        raise Refused("not a certificate chain", "cert_install: openssl cannot read a certificate: %s"
                      % first_error_line(stderr))
    return stdout


def _public_key(text):
    match = re.search(r"-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----", text)
    return re.sub(r"\s", "", match.group(0)) if match else None


def leaf_facts(pem):
    """(public key, SAN names, not_after epoch, issuer) of the leaf, read by
    openssl in the sandbox; a SAN entry that is not a DNS name is refused."""
    out = _sandboxed_x509(pem, ["-pubkey", "-ext", "subjectAltName", "-enddate", "-issuer",
                                "-nameopt", "RFC2253"])
    san = re.search(r"X509v3 Subject Alternative Name:[^\n]*\n\s*([^\n]*)", out)
    entries = [e.strip() for e in san.group(1).split(",")] if san else []
    if not entries:
        raise Refused("names", "cert_install: the certificate has no subjectAltName")
    names = []
    for entry in entries:
        if not entry.startswith("DNS:") or not DOMAIN_RE.fullmatch(entry[4:]):
            raise Refused("names", "cert_install: %r is not a plain host name" % entry[:100])
        names.append(entry[4:])
    end = re.search(r"(?m)^notAfter=(.+)$", out)
    issuer = re.search(r"(?m)^issuer=(.*)$", out)
    from calendar import timegm

    try:
        not_after = timegm(time.strptime(end.group(1).strip(), "%b %d %H:%M:%S %Y GMT"))
    except (AttributeError, ValueError) as e:
        raise Refused("not a certificate chain", "cert_install: no readable notAfter") from e
    return _public_key(out), names, not_after, (issuer.group(1).strip() if issuer else "")[:300]


def _read_small(tree, path):
    found = tree.read(path)
    return None if found is None else found[0]


def _update_sni_index(tree, tls_folder, domain, names, created):
    """Drop the domain's lines from the index and add its new names. An index
    that does not parse (not written by us) is rebuilt from this one domain
    rather than trusted."""
    path = tls.SNI_INDEX
    current = _read_small(tree, path) or b""
    try:
        pairs = [p for p in tls.parse_sni_index(current) if p.domain != domain]
    except ValueError:
        pairs = []
    # a name another domain's certificate also carries goes to this one
    pairs = [p for p in pairs if p.name not in names]
    content = tls.render_sni_index(pairs + [tls.SniName(name, domain) for name in names])
    if content != current:
        _put_file(tree, path, content, CERT_FILE_OWNER, created)


def op_cert_install(request, tree, options):
    _expect_keys(request, ("op", "domain", "server", "chain_pem"), "cert_install")
    tls_folder, folder, domain = _cert_target(request, tree, options, "cert_install")
    ders = parse_chain(request.get("chain_pem"))
    pems = [_pem(der) for der in ders]
    for name in (PENDING_KEY, PENDING_NAMES, tls.PRIVKEY, tls.FULLCHAIN):
        tree.refuse_symlinks(folder + "/" + name)
    tree.refuse_symlinks(tls.SNI_INDEX)
    key = _read_small(tree, folder + "/" + PENDING_KEY)
    pending = _read_small(tree, folder + "/" + PENDING_NAMES)
    if key is None or pending is None:
        raise Failed("no pending key for %s: ask cert_key for a CSR first" % (domain or "the server"))
    public, names, not_after, issuer = leaf_facts(pems[0])
    for pem in pems[1:]:
        _sandboxed_x509(pem, ["-subject"])
    if public is None or public != _public_key(_openssl(["pkey", "-pubout"], key).decode("ascii")):
        raise Refused("key mismatch", "cert_install: the certificate is not for the pending key")
    asked = set(pending.decode("ascii", "replace").split())
    for name in names:
        if name not in asked or (domain is not None and not _name_in_domain(name, domain)):
            raise Refused("name outside the domain", "cert_install: %r was not asked for" % name)
    if not_after <= time.time():
        raise Refused("expired", "cert_install: the certificate has expired")
    created = []
    # key first, certificate next: both are swapped before any reload.
    _put_file(tree, folder + "/" + tls.PRIVKEY, key, CERT_KEY_OWNER, created)
    _put_file(tree, folder + "/" + tls.FULLCHAIN, "".join(pems).encode("ascii"), CERT_FILE_OWNER, created)
    tree.unlink(folder + "/" + PENDING_KEY)
    tree.unlink(folder + "/" + PENDING_NAMES)
    if domain is not None:
        _update_sni_index(tree, tls_folder, domain, names, created)
    ok, reloads = reload_services(list(CERT_RELOAD), tree, options.service_command)
    answer = {
        "ok": ok,
        "names": sorted(names),
        "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_after)),
        "issuer": issuer,
        "reloads": reloads,
    }
    if not ok:
        answer["error"] = "the certificate is installed but a reload failed: %s" % ", ".join(
            s for s, r in reloads.items() if not r["ok"])
    return (OK if ok else FAILED), answer


def op_cert_remove(request, tree, options):
    _expect_keys(request, ("op", "domain"), "cert_remove")
    if "server" in request:
        raise Refused("bad request", "cert_remove: the server's certificate stays")
    tls_folder, folder, domain = _cert_target(request, tree, options, "cert_remove")
    for name in (tls.FULLCHAIN, tls.PRIVKEY, PENDING_KEY, PENDING_NAMES):
        tree.refuse_symlinks(folder + "/" + name)
    present = set(tree.listdir(folder))
    # The index only: from then on no render names the files, and Exim (a
    # lookup per connection) serves the server's certificate for its names.
    _update_sni_index(tree, tls_folder, domain, [], [])
    for name in (PENDING_KEY, PENDING_NAMES):
        tree.unlink(folder + "/" + name)
    # The certificate and key stay while dovecot.conf or nginx's sites name
    # them (a restart would fail on a missing file); the apply the panel runs
    # next renders them without it and deletes them then (op_apply). Never
    # rendered yet: they go now. No reload either way.
    deleted, kept = prune_domain_certificates(tree, options)
    tree.rmdir_if_empty(folder)  # an order that never finished left only its pending key
    files = {tls.FULLCHAIN, tls.PRIVKEY} & present
    answer = {"ok": True, "removed": bool(present), "deleted": domain in deleted,
              "kept_until_apply": bool(files) and domain not in deleted}
    if kept:
        answer["certificates_kept"] = kept
    return OK, answer


# Read-only ops: no lock (see main). The envelope cache queue_list writes is
# replaced whole by a rename, so two pages at once cannot tear it.
# sync_mail only reads this node's mail (Dovecot locks its own folders) and may
# run for minutes: an apply on this node must not wait behind it.
UNLOCKED_OPS = frozenset({"queue_list", "queue_show", "held_senders", "log_search", "sync_mail"})

OPERATIONS = {
    "cert_key": op_cert_key,
    "cert_install": op_cert_install,
    "cert_remove": op_cert_remove,
    "move_mail_away": op_move_mail_away,
    "purge_deleted_mail": op_purge_deleted_mail,
    "sync_mail": op_sync_mail,
    "quota_usage": op_quota_usage,
    "state": op_state,
    "apply": op_apply,
    "reload": op_reload,
    "install_tarball": op_install_tarball,
    "read": op_read,
    "queue_list": op_queue_list,
    "queue_show": op_queue_show,
    "queue_action": op_queue_action,
    "held_senders": op_held_senders,
    "kick_mailbox": op_kick_mailbox,
    "log_search": op_log_search,
}


# --------------------------------------------------------------------------
# Entry point


def take_lock(tree, timeout):
    """Two helpers never interleave: an exclusive flock for the whole request.
    The kernel drops it when the process dies, even by SIGKILL. A wait longer
    than timeout (or a stop signal while waiting) gives up, says so, and
    touches nothing."""
    path = tree.real(LOCK_FILE)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Failed("%s: not a regular file" % LOCK_FILE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            if STOP_REQUESTED:
                raise Failed("stopped while waiting for another helper; nothing changed")
            if time.monotonic() >= deadline:
                raise Failed(
                    "another helper has held the lock for over %g s; nothing changed, try again"
                    % timeout
                )
            time.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="mailpanel-helper",
        description="Privileged helper of mailpanel: JSON request on stdin.",
    )
    parser.add_argument(
        "--root", default="/", help="prefix every managed path (development, tests)"
    )
    parser.add_argument(
        "--service-command",
        default=None,
        help="run 'CMD reload SERVICE' instead of systemctl / nft -f",
    )
    parser.add_argument(
        "--mail-root",
        default="/var/mail/vhosts",
        help="where the Maildirs live (<mail root>/<domain>/<local part>/Maildir)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=LOCK_TIMEOUT,
        help="seconds to wait for another helper's lock (default %(default)s)",
    )
    parser.add_argument(
        "--no-chown",
        action="store_true",
        help="do not chown (not root, or the groups do not exist); still chmod",
    )
    return parser.parse_args(argv)


STOP_REQUESTED = []


def _finish_first(signum, frame):
    # Stopping the worker (or a client timeout) signals sudo, which relays it
    # here: finishing the request beats leaving half an apply behind. A
    # handler, not SIG_IGN, because an ignored signal would stay ignored in
    # the validators and reload commands started from here. Nothing here
    # waits without a limit (no blocking open, a lock wait with a timeout,
    # children with timeouts), and a helper still waiting for the lock gives up.
    STOP_REQUESTED.append(signum)


def main(argv=None):
    options = parse_args(argv)
    os.umask(0o077)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _finish_first)
    tree = Tree(options.root, chown=not options.no_chown)
    try:
        raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        if len(raw) > MAX_REQUEST_BYTES:
            raise Refused(
                "bad request", "request larger than %d bytes" % MAX_REQUEST_BYTES
            )
        request = parse_request(raw)
        operation = (
            OPERATIONS.get(request["op"])
            if isinstance(request["op"], str)
            else None
        )
        if operation is None:
            raise Refused(
                "unknown op",
                "%r: unknown op (allowed: %s)"
                % (request["op"], ", ".join(sorted(OPERATIONS))),
            )
        # Reading the spool or the logs changes nothing the lock guards: it
        # neither waits behind an apply nor makes one wait (a log search may
        # read for LOG_SEARCH_SECONDS).
        lock_fd = None if request["op"] in UNLOCKED_OPS else take_lock(tree, options.lock_timeout)
        try:
            code, answer = operation(request, tree, options)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
    except Refused as e:
        code, answer = REFUSED, {
            "ok": False,
            "refused": True,
            "rule": e.rule,
            "error": e.message,
        }
    except Failed as e:
        code, answer = FAILED, dict(e.details, ok=False, error=e.message)
    except Exception as e:  # the caller still gets one JSON answer
        code, answer = FAILED, {
            "ok": False,
            "error": "internal error: %s: %s" % (type(e).__name__, e),
        }
    sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
