"""SPF records as real domains publish them, for bench/spf_compare.py.

The records follow what mail providers and their customers publish (Google
Workspace's netblock includes, Microsoft 365, Amazon SES, SendGrid,
Mailchimp, Salesforce's exists: with a macro, redirect= chains, a, mx, ptr,
dual CIDR) and the mistakes seen in customers' zones (two records, eleven
includes, a stray dot after all, an include of a name without SPF, a
timeout). Provider ranges change over time: these are a snapshot of their
shape, not a source of truth about who may send for them.

ZONES maps a name to its records: (type, value), a TXT value a string or a
tuple of the strings of one record; "TIMEOUT" as a record makes every query
of that name fail. QUERIES: (domain, IP) pairs to evaluate."""

GOOGLE = {
    "_spf.google.com": [("TXT", "v=spf1 include:_netblocks.google.com include:_netblocks2.google.com include:_netblocks3.google.com ~all")],
    "_netblocks.google.com": [("TXT", "v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ip4:66.102.0.0/20 ip4:66.249.80.0/20 ip4:72.14.192.0/18 ip4:74.125.0.0/16 ip4:108.177.8.0/21 ip4:173.194.0.0/16 ip4:209.85.128.0/17 ip4:216.58.192.0/19 ip4:216.239.32.0/19 ~all")],
    "_netblocks2.google.com": [("TXT", "v=spf1 ip6:2001:4860:4000::/36 ip6:2404:6800:4000::/36 ip6:2607:f8b0:4000::/36 ip6:2800:3f0:4000::/36 ip6:2a00:1450:4000::/36 ip6:2c0f:fb50:4000::/36 ~all")],
    "_netblocks3.google.com": [("TXT", "v=spf1 ip4:172.217.0.0/19 ip4:172.217.32.0/20 ip4:172.217.128.0/19 ip4:172.217.160.0/20 ip4:172.217.192.0/19 ip4:172.253.56.0/21 ip4:172.253.112.0/20 ip4:108.177.96.0/19 ip4:35.191.0.0/16 ip4:130.211.0.0/22 ~all")],
}
MICROSOFT = {
    "spf.protection.outlook.com": [("TXT", "v=spf1 include:spfd.protection.outlook.com -all")],
    "spfd.protection.outlook.com": [("TXT", "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip4:52.100.0.0/15 ip4:52.102.0.0/16 ip4:52.103.0.0/17 ip4:104.47.0.0/17 ip6:2a01:111:f400::/48 ip6:2a01:111:f403::/49 ip6:2a01:111:f403:8000::/51 ip6:2a01:111:f403:c000::/51 ip6:2a01:111:f403:f000::/52 -all")],
}
PROVIDERS = {
    "amazonses.com": [("TXT", "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 ip4:54.240.0.0/18 ip4:69.169.224.0/20 ip4:23.249.208.0/20 ip4:23.251.224.0/19 ip4:76.223.176.0/20 ip4:54.240.64.0/19 ip4:54.240.96.0/19 -all"), ("TXT", "google-site-verification=abc")],
    "sendgrid.net": [("TXT", "v=spf1 ip4:167.89.0.0/17 ip4:208.117.48.0/20 ip4:50.31.32.0/19 ip4:198.37.144.0/20 ip4:198.21.0.0/21 ip4:192.254.112.0/20 ip4:168.245.0.0/17 ip4:149.72.0.0/16 ip4:159.183.0.0/16 ~all")],
    "servers.mcsv.net": [("TXT", "v=spf1 ip4:205.201.128.0/20 ip4:198.2.128.0/18 ip4:148.105.8.0/21 -all")],
    "_spf.salesforce.com": [("TXT", "v=spf1 exists:%{i}._spf.mta.salesforce.com -all")],
    "13.111.0.10._spf.mta.salesforce.com": [("A", "127.0.0.1")],
    "mailgun.org": [("TXT", "v=spf1 include:_spf.mailgun.org ~all")],
    "_spf.mailgun.org": [("TXT", "v=spf1 include:_spf.eu.mailgun.org include:_spf.us.mailgun.org ~all")],
    "_spf.eu.mailgun.org": [("TXT", "v=spf1 ip4:141.193.32.0/23 ip4:159.135.140.80/29 ~all")],
    "_spf.us.mailgun.org": [("TXT", "v=spf1 ip4:209.61.151.0/24 ip4:166.78.68.0/22 ip4:198.61.254.0/23 ip4:192.237.158.0/23 ~all")],
    "_spf.facebook.com": [("TXT", "v=spf1 ip4:66.220.144.128/25 ip4:66.220.155.0/24 ip4:69.171.232.0/24 ip4:173.252.100.0/24 ip6:2a03:2880:f01c::/48 -all")],
    "zendesk.example": [("TXT", "v=spf1 ip4:192.161.144.0/20 ip4:185.12.80.0/22 ip4:188.172.128.0/20 ~all")],
    "helpdesk.example": [("TXT", "v=spf1 include:zendesk.example ~all")],
    "crm.example": [("TXT", "v=spf1 include:servers.mcsv.net ~all")],
    "news.example": [("TXT", "v=spf1 include:sendgrid.net -all")],
}
CUSTOMERS = {
    # Google Workspace and a newsletter service
    "shop.example": [("TXT", "v=spf1 include:_spf.google.com include:servers.mcsv.net ~all")],
    # Microsoft 365 with its own mail server's address and a dual-CIDR a:
    "firm.example": [("TXT", "v=spf1 ip4:203.0.113.25 a:mx.firm.example/28 include:spf.protection.outlook.com -all")],
    "mx.firm.example": [("A", "198.51.100.17")],
    # a, mx, ptr of a small office; mx hosts in the domain
    "office.example": [("TXT", "v=spf1 a mx ptr ~all"), ("A", "192.0.2.80"), ("MX", "10 mail.office.example.")],
    "mail.office.example": [("A", "192.0.2.81"), ("AAAA", "2001:db8::81")],
    "81.2.0.192.in-addr.arpa": [("PTR", "mail.office.example.")],
    "99.2.0.192.in-addr.arpa": [("PTR", "spoof.office.example.")],
    "spoof.office.example": [("A", "192.0.2.100")],
    # redirect= to a provider, then nothing else
    "social.example": [("TXT", "v=spf1 redirect=_spf.facebook.com")],
    # SES for transactional mail, Salesforce's macro, Mailgun two levels down
    "saas.example": [("TXT", "v=spf1 include:amazonses.com include:_spf.salesforce.com include:mailgun.org -all")],
    # eleven includes: more than ten lookups (the most common permerror)
    "kitchen-sink.example": [("TXT", "v=spf1 include:spf.protection.outlook.com include:_spf.google.com include:servers.mcsv.net include:sendgrid.net include:mailgun.org include:amazonses.com include:_spf.salesforce.com include:helpdesk.example include:crm.example include:news.example include:_spf.facebook.com -all")],
    # two records (a permerror however they read)
    "twice.example": [("TXT", "v=spf1 include:_spf.google.com ~all"), ("TXT", "v=spf1 ip4:203.0.113.9 -all")],
    # a stray dot after all: "all." is no mechanism
    "dotted.example": [("TXT", "v=spf1 ip4:203.0.113.5 include:_spf.google.com ~all.")],
    # an include whose target has no SPF record
    "dangling.example": [("TXT", "v=spf1 include:spf.gone.example ip4:203.0.113.7 -all")],
    "spf.gone.example": [("TXT", "some verification token")],
    # an include that times out: temperror, not fail
    "slow.example": [("TXT", "v=spf1 include:spf.slow.example -all")],
    "spf.slow.example": ["TIMEOUT"],
    # the whole internet
    "open.example": [("TXT", "v=spf1 ip4:203.0.113.0/24 +all")],
    # an address with host bits and a prefix
    "hostbits.example": [("TXT", "v=spf1 ip4:192.0.2.10/24 ip6:2001:db8:1::1/64 -all")],
    # SPF written with upper case and several spaces
    "shouting.example": [("TXT", "V=SPF1  IP4:203.0.113.40   -ALL")],
    # an SPF record split over two strings (joined without a space)
    "split.example": [("TXT", ("v=spf1 ip4:203.0.113.50 include:_spf.goo", "gle.com ~all"))],
    # sender ID, not SPF: no SPF record
    "senderid.example": [("TXT", "spf2.0/pra ip4:203.0.113.60 -all")],
    # an exists: with a reversed-IP macro
    "dnsbl-style.example": [("TXT", "v=spf1 exists:%{ir}.allow.dnsbl-style.example -all")],
    "5.113.0.203.allow.dnsbl-style.example": [("A", "127.0.0.2")],
    # mx: with a prefix; the MX host's address is in a /24
    "mxnet.example": [("TXT", "v=spf1 mx:mxhost.example/24 -all")],
    "mxhost.example": [("MX", "5 in.mxhost.example.")],
    "in.mxhost.example": [("A", "198.51.100.200")],
    # void lookups: three a: of names that do not exist
    "voids.example": [("TXT", "v=spf1 a:nx1.voids.example a:nx2.voids.example a:nx3.voids.example ip4:203.0.113.70 -all")],
    # a bad ip4 (prefix too long): permerror
    "badcidr.example": [("TXT", "v=spf1 ip4:203.0.113.80/33 -all")],
    # no record at all
    "nothing.example": [("A", "203.0.113.90")],
    # "we do not know": ?all while moving providers
    "moving.example": [("TXT", "v=spf1 ip4:203.0.113.100 ?all")],
}

ZONES = {**GOOGLE, **MICROSOFT, **PROVIDERS, **CUSTOMERS}

QUERIES = [
    ("shop.example", "209.85.220.41"), ("shop.example", "2a00:1450:4864:20::52b"), ("shop.example", "198.2.180.5"),
    ("shop.example", "203.0.113.1"), ("firm.example", "203.0.113.25"), ("firm.example", "198.51.100.30"),
    ("firm.example", "198.51.100.40"), ("firm.example", "40.107.22.10"), ("firm.example", "2a01:111:f403:c000::1"),
    ("firm.example", "192.0.2.1"), ("office.example", "192.0.2.80"), ("office.example", "192.0.2.81"),
    ("office.example", "2001:db8::81"), ("office.example", "192.0.2.99"), ("office.example", "198.51.100.1"),
    ("social.example", "66.220.144.130"), ("social.example", "2a03:2880:f01c::5"), ("social.example", "8.8.8.8"),
    ("saas.example", "54.240.8.1"), ("saas.example", "13.111.0.10"), ("saas.example", "209.61.151.9"),
    ("saas.example", "141.193.33.1"), ("saas.example", "192.0.2.200"), ("kitchen-sink.example", "40.107.1.1"),
    ("kitchen-sink.example", "203.0.113.1"), ("twice.example", "203.0.113.9"), ("dotted.example", "203.0.113.5"),
    ("dotted.example", "192.0.2.1"), ("dangling.example", "203.0.113.7"), ("dangling.example", "192.0.2.1"),
    ("slow.example", "192.0.2.1"), ("open.example", "203.0.113.200"), ("open.example", "8.8.4.4"),
    ("hostbits.example", "192.0.2.200"), ("hostbits.example", "192.0.3.1"), ("hostbits.example", "2001:db8:1::ffff"),
    ("hostbits.example", "2001:db8:2::1"), ("shouting.example", "203.0.113.40"), ("shouting.example", "203.0.113.41"),
    ("split.example", "203.0.113.50"), ("split.example", "209.85.220.41"), ("senderid.example", "203.0.113.60"),
    ("dnsbl-style.example", "203.0.113.5"), ("dnsbl-style.example", "203.0.113.6"), ("mxnet.example", "198.51.100.9"),
    ("mxnet.example", "198.51.101.9"), ("voids.example", "203.0.113.70"), ("badcidr.example", "203.0.113.80"),
    ("nothing.example", "203.0.113.90"), ("moving.example", "203.0.113.100"), ("moving.example", "192.0.2.1"),
]
