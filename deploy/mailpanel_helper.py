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
    {"op": "purge_deleted_mail", "older_than_days": N}
        -> {"ok": true, "purged": ["example.org-20261128083000", ...]}

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
import base64
import binascii
import errno
import fcntl
import grp
import hashlib
import io
import json
import os
import posixpath
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tarfile
import tempfile

# --------------------------------------------------------------------------
# The library: mailconf (renderers, grammars, the managed-file table), from the
# checkout this file sits in (development, tests) or from where install.sh puts
# it root-owned beside the helper.

HELPER_DIR = os.path.dirname(os.path.realpath(__file__))
LIBRARY_DIRS = (os.path.dirname(HELPER_DIR), "/usr/local/lib/mailpanel-helper")


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
from mailconf import grammar, managed  # noqa: E402

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
    ("/var/lib/snappymail/data/**", "www-data", "www-data", 0o750, False),
)
DEFAULT_DIRECTORY = ("root", "root", 0o755)

# panel service name -> systemd unit; None = not a unit (see reload_command)
SERVICES = {
    "exim4": "exim4",
    "dovecot": "dovecot",
    "php-fpm": "php8.2-fpm",
    "firewall": None,
}
FIREWALL_RULES = "/etc/nftables.d/mailpanel.nft"

# SnappyMail's release is unpacked here by "install_tarball". The code belongs
# to root (readable by the web server's group); data/ belongs to www-data, which
# writes its settings and users' data there.
# folder, (owner, group, dir mode, file mode) for code, same for data/
SNAPPYMAIL_DIR = managed.SNAPPYMAIL_DIR
SNAPPYMAIL_CODE_OWNER = ("root", "www-data", 0o750, 0o640)
SNAPPYMAIL_DATA_OWNER = ("www-data", "www-data", 0o750, 0o640)
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
# www-data) never redirects a root write.

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

    def read(self, path):
        """Content and stat of a live file, or None when it does not exist."""
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
                chunks = []
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
                return b"".join(chunks), st
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


def sandbox_argv(argv, net_admin=False):
    """argv wrapped to run as nobody with no network. As root: a new network
    namespace (unshare) and then setpriv to nobody, no groups, no new
    privileges (setuid exim stays nobody); net_admin keeps CAP_NET_ADMIN
    inside that empty namespace only (nft -c needs it). Not root
    (development): the caller is unprivileged already; nft gets a user
    namespace for the same reason."""
    if os.geteuid() != 0:
        if net_admin:
            return [_program("unshare"), "--user", "--map-root-user", "--net", "--"] + argv
        return argv
    caps = ["--inh-caps=+net_admin", "--ambient-caps=+net_admin"] if net_admin else []
    return [
        _program("unshare"), "--net", "--",
        _program("setpriv"), "--reuid=%d" % SANDBOX_USER, "--regid=%d" % SANDBOX_USER,
        "--clear-groups", "--no-new-privs", *caps, "--",
    ] + argv


def run_sandboxed(argv, content, name, timeout=VALIDATE_TIMEOUT, net_admin=False):
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
        return _run(sandbox_argv(argv, net_admin), timeout, {"HOME": folder, "TMPDIR": folder})
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


def _validate(argv, content, name, net_admin=False):
    code, _stdout, stderr = run_sandboxed(argv, content, name, net_admin=net_admin)
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


VALIDATORS = {
    "exim": validate_exim,
    "doveconf": validate_doveconf,
    "nft": validate_nft,
    "php-ini": validate_php_ini,
}


# --------------------------------------------------------------------------
# Services


def reload_command(service, tree, service_command):
    if service_command:
        # Development and tests: the configured command gets the panel's name.
        return shlex.split(service_command) + ["reload", service]
    if service == "firewall":
        return [_program("nft"), "-f", tree.real(FIREWALL_RULES)]
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
    code_files = None
    if "code" in request:
        from mailconf.params import CodeParams
        from mailconf.render import render_code

        try:
            params = CodeParams.from_json(request["code"])
        except ValueError as e:
            raise Refused("bad parameter", "code: %s" % e) from e
        try:
            code_files = render_code(params, load_layout(tree, options))
        except ValueError as e:
            raise Failed("rendering the code files failed: %s" % e) from e
        for path in code_files:
            if check_path(path).kind != CODE:
                raise Failed("%s: rendered, but not a code file in the table" % path)
        seen.update(code_files)
    for path in sorted(seen):
        tree.refuse_symlinks(path)
    return writes, removes, services, code_files


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
    those domain folders. Unchanged files are skipped, managed files in those
    folders that are not written are removed: one round trip for a one-domain
    apply instead of state + apply."""
    domains = _domain_names(request, "sync_domains", "apply")
    folders = tuple("%s/%s/" % (DOMAINS_DIR, name) for name in domains)
    for path, _rule, _content in writes:
        if not path.startswith(folders):
            raise Refused("outside allowlist", "%r: not in a synced domain folder" % path)
    live = managed_hashes(tree, domains)
    wanted = {path for path, _rule, _content in writes}
    kept = [
        (path, rule, content)
        for path, rule, content in writes
        if live.get(path) != hashlib.sha256(content).hexdigest()
    ]
    stale = sorted(p for p in live if p.startswith(folders) and p not in wanted)
    server_files = sorted(p for p in live if not p.startswith(DOMAINS_DIR + "/"))
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
    writes, removes, services, code_files = parse_apply(request, tree, options)
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
    if removed_dirs:
        answer["removed_dirs"] = removed_dirs
    if validation:
        answer["validation"] = validation
    if ok:
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


OPERATIONS = {
    "move_mail_away": op_move_mail_away,
    "purge_deleted_mail": op_purge_deleted_mail,
    "quota_usage": op_quota_usage,
    "state": op_state,
    "apply": op_apply,
    "reload": op_reload,
    "install_tarball": op_install_tarball,
    "read": op_read,
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
        lock_fd = take_lock(tree, options.lock_timeout)
        try:
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
            code, answer = operation(request, tree, options)
        finally:
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
