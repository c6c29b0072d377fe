"""The pure core of mailpanel's configuration: standard library only.

Both the panel and the privileged helper import this package: the panel to
render every managed file and predict its hash, the helper (as root) to render
the code files itself from typed parameters and to check every data file
against its grammar. In production it is installed root-owned beside the helper
(/usr/local/lib/mailpanel-helper/mailconf), never writable by the panel's user.

- ``snapshot``  plain frozen dataclasses: what the database says, and where files live
- ``validate``  strict checks for every value that lands in a file
- ``render``    snapshot/params + layout → {production path: FileSpec}
- ``params``    the typed parameter set the code files are rendered from
- ``grammar``   line-by-line grammars of the data files
- ``managed``   the one table of managed files: code or data, owner, mode, check
"""
