"""Every secret form we know, as a guest writes it; each secret contains `CANARY`.

Shared by the redaction tests of every output (bundle, doctor, status, metrics,
log messages). Issue 13 item 4 and issue 14 item 2 list the forms; the variants
(case, JSON/XML/URL escaping, double encoding) are ours. `TEXT_FORMS` are the
ones that can appear in a single log line; `BLOCK_FORMS` span lines or are binary.
"""

from __future__ import annotations

CANARY = b"CANARY"

# A PKCS#8 RSA key's DER header (OID 1.2.840.113549.1.1.1) with CANARY in its body.
DER_PRIVATE_KEY = (
    b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00"
    b"\x04\x82\x04\xa7\x30\x82\x04\xa3\x02\x01\x00\x02\x82\x01\x01\x00CANARY\xc3\x11\x9e\x0a"
    b"\xa1CANARY\x00\xff\x0a\x13\x37"
)
# A PKCS#12 (PFX) store: version 3, then the pkcs7-data OID.
PFX_STORE = (
    b"\x30\x82\x09\x61\x02\x01\x03\x30\x82\x09\x27\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
    b"\xa0\x82\x09\x18\x04\x82\x09\x14CANARY\x0a\x8e\x00CANARY\xfe"
)
# A SEC1 EC private key: the key bytes come before the curve OID.
DER_EC_KEY = (
    b"\x30\x77\x02\x01\x01\x04\x20CANARY-ec-private-key-bytes-32\xa0\x0a\x06\x08"
    b"\x2a\x86\x48\xce\x3d\x03\x01\x07\xa1\x44\x03\x42\x00\x04"
)
# A DER certificate (sha256WithRSAEncryption).
DER_CERTIFICATE = (
    b"\x30\x82\x03\x2c\x30\x82\x02\x14\xa0\x03\x02\x01\x02\x02\x09\x00CANARY\x30\x0d\x06\x09"
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b\x05\x00"
)

TEXT_FORMS: dict[str, bytes] = {
    "sas_query": b"GET https://a.blob.core.windows.net/c/b.vhd?sv=2019&sr=b&sig=CANARY%2B1%3D&se=2",
    "sas_query_upper": b"url HTTPS://A.BLOB.CORE.WINDOWS.NET/C/B?SV=1&SIG=CANARY&SE=2",
    "sas_json_escaped": b'{"uri": "https:\\/\\/a.blob\\/p?sv=1\\u0026sig=CANARY\\u0026se=2"}',
    "sas_json_escaped_first": b'"https:\\/\\/a.blob\\/p\\u003fsig=CANARY\\u0026sv=1"',
    "sas_url_encoded": b"next=https%3A%2F%2Fa%2Fp%3Fsv%3D1%26sig%3DCANARY%26se%3D2",
    "sas_url_encoded_first": b"next=https%3A%2F%2Fa%2Fp%3Fsig%3DCANARY%26sv%3D1",
    "sas_url_encoded_lower": b"q=sv%3d1%26sig%3dCANARY",
    "sas_double_encoded": b"q=sv%253D1%2526sig%253DCANARY%2526se%253D2",
    "sas_bare": b"params sv=1&sig=CANARY&se=2",
    "sas_bare_upper": b"params sv=1&Sig=CANARY",
    "sas_xml_amp": b"<Blob>https://a/p?sv=1&amp;sig=CANARY&amp;se=1</Blob>",
    "sas_json_object": b'{"sv": "2019", "sig": "CANARY", "se": "2030"}',
    "sas_json_object_escaped": b'"{\\"sig\\": \\"CANARY\\"}"',
    "sas_python_dict": b"{'sv': '2019', 'sig': 'CANARY'}",
    "sas_connection_string": b"BlobEndpoint=https://a/;SharedAccessSignature=sv=1&sig%3DCANARY",
    "bearer_header": b"request headers: Authorization: Bearer CANARYeyJhbGciOiJSUzI1NiJ9.x.y",
    "bearer_header_lower": b"authorization: bearer CANARY.abc-def_ghi",
    "bearer_json": b'{"headers": {"Authorization": "Bearer CANARYeyJ0eXAiOiJKV1Qi"}}',
    "bearer_json_escaped": b'"{\\"Authorization\\": \\"Bearer CANARYeyJ\\"}"',
    "basic_header": b"Authorization: Basic CANARYdXNlcjpwYXNz",
    "sharedkey_header": b"Authorization: SharedKey account:CANARY+sig=",
    "x_ms_auth_python": b"{'Authorization': 'Bearer CANARYtoken'}",
    "protected_plain": b'{"protectedSettings": "MIIBCANARY==", "publicSettings": {}}',
    "protected_capital": b'{"ProtectedSettings": "MIIBCANARY=="}',
    "protected_upper": b'{"PROTECTEDSETTINGS": "CANARY"}',
    "protected_escaped": b'"{\\"protectedSettings\\": \\"CANARY\\"}"',
    "protected_xml_quot": b"<RuntimeSettings>{&quot;protectedSettings&quot;: &quot;MIIBCANARY==&quot;}",  # noqa: E501
    "protected_xml_quot_capital": b"&quot;ProtectedSettings&quot;:&quot;CANARY&quot;",
    "protected_object": b'{"protectedSettings": {"password": "CANARY", "k": ["}", "CANARY"]}}',
    "protected_object_capital": b'{"ProtectedSettings": {"commandToExecute": "CANARY"}}',
    "protected_object_xml_quot": b"&quot;protectedSettings&quot;: {&quot;k&quot;: &quot;CANARY&quot;}",  # noqa: E501
    "account_key": b"DefaultEndpointsProtocol=https;AccountName=a;AccountKey=CANARY+ab==;Suffix=x",
    "account_key_lower": b"conn: defaultendpointsprotocol=https;accountkey=CANARY==;",
    "account_key_json": b'{"storageAccountKey": "CANARY=="}',
    "shared_access_key": b"Endpoint=sb://x/;SharedAccessKeyName=root;SharedAccessKey=CANARY=",
    "json_password": b'{"adminPassword": "CANARY"}',
    "json_password_escaped": b'"{\\"adminPassword\\": \\"CANARY\\"}"',
    "json_password_xml_quot": b"&quot;adminPassword&quot;: &quot;CANARY&quot;",
    "json_token": b'{"sasToken": "CANARY", "clientSecret": "CANARY"}',
    "python_password": b"user-data: {'password': 'CANARY', 'name': 'x'}",
    "password_hash_sha512": b"'passwd': '$6$rounds=4096$CANARYsalt$CANARYhashvalue/.'",
    "password_hash_yescrypt": b"hashed_passwd: $y$j9T$CANARYsalt$CANARYhash",
    "password_hash_bcrypt": b"pw $2b$12$CANARYsaltsaltsaltsaltsCANARYhashhashhashhashha",
    "proxy_scheme": b"HttpProxy.Host=http://user:CANARY@proxy.local",
    "proxy_no_scheme": b"HttpProxy.Host=user:CANARY@proxy.local",
    "proxy_env_no_scheme": b"https_proxy=proxyuser:CANARY@10.0.0.4:3128",
    "proxy_at_in_password": b"http_proxy=http://user:p@ss-CANARY@proxy:3128/",
    "proxy_at_in_password_no_scheme": b"proxy user:p@CANARY@proxy:3128",
    "env_password": b"Environment=DB_PASSWORD=CANARY",
    "env_quoted_token": b'Environment="API_TOKEN=CANARY" "LANG=C"',
    "env_secret_lower": b"environment=client_secret=CANARY",
    "config_password": b"password = CANARY",
    "config_yaml_list_passwd": b"  - plain_text_passwd: CANARY",
    "config_psk": b"wifi_psk: CANARY",
    "wireguard_conf": b"PrivateKey = CANARY+abc=",
    "wireguard_preshared": b"PresharedKey = CANARY+abc=",
    "netplan_private_key": b"        private-key: CANARY+abc=",
    "netplan_key_private": b"          private: CANARY+abc=",
    "user_password_xml": b"<UserPassword>CANARY</UserPassword>",
    "user_password_ns": b"<wa:UserPassword>CANARY</wa:UserPassword>",
    "base64_der_inline": (
        b"<Data>MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCANARYabcdefghij"
        b"klmnopqrstuvwxyz0123456789+/</Data>"
    ),
    "chpasswd_inline": b"cc_set_passwords: {'chpasswd': {'list': 'root:CANARY', 'expire': False}}",
}

BLOCK_FORMS: dict[str, bytes] = {
    # A YAML block quoted mid-line (a log message or an exception quoting cloud.cfg).
    "chpasswd_block_quoted": b"failed to apply chpasswd:\n  list: |\n    root:CANARY1\n"
                             b"    azure:CANARY2",
    "pem_private_key": b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\nCANARY\n-----END RSA PRIVATE KEY-----",  # noqa: E501
    "pem_openssh_key": (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nCANARY\n"
        b"-----END OPENSSH PRIVATE KEY-----"
    ),
    "pem_encrypted_key": (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nCANARY\n-----END ENCRYPTED PRIVATE KEY-----"
    ),
    "ssh2_key": (
        b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: x\nCANARY\n"
        b"---- END SSH2 ENCRYPTED PRIVATE KEY ----"
    ),
    "pem_certificate_store": (
        b"-----BEGIN CERTIFICATE-----\nMIIC\nCANARY\n-----END CERTIFICATE-----\n"
        b"-----BEGIN CERTIFICATE-----\nCANARY\n-----END CERTIFICATE-----"
    ),
    "pem_pkcs7": b"-----BEGIN PKCS7-----\nCANARY\n-----END PKCS7-----",
    "putty_key": (
        b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n"
        b"AAAAC3NzaC1lZDI1NTE5AAAAIB\nx\nKey-Derivation: Argon2id\nPrivate-Lines: 1\n"
        b"CANARYAAAAIH5U3Q\nPrivate-MAC: 0123456789abcdefCANARY"
    ),
    "putty_key_v2": (
        b"PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPublic-Lines: 1\nAAAAB3\n"
        b"Private-Lines: 2\nCANARYAAAB\nCANARYAAAC\nPrivate-MAC: CANARYabcdef"
    ),
    "custom_data_multiline": b"<ns:CustomData>\nCANARY\nCANARY\n</ns:CustomData>",
    "smime_p7m": (
        b"MIME-Version: 1.0\nContent-Disposition: attachment; filename=\"smime.p7m\"\n"
        b"Content-Type: application/x-pkcs7-mime; name=\"smime.p7m\"\n\n"
        b"MIAGCSqGSIb3DQEHA6CAMIACAQAxggHXMIIB0wIBADCBuzCBrTELMAkGA1UEBhMCVVMx\n"
        b"CANARYEwYDVQQIEwxXYXNoaW5ndG9uMRAwDgYDVQQHEwdSZWRtb25kMR4wHAYDVQQK\n"
        b"EwdNaWNyb3NvZnQwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCANARY=="
    ),
    "chpasswd_block": (
        b"chpasswd:\n  expire: false\n  list: |\n    root:CANARY1\n    ubuntu:CANARY2\n"
        b"  users:\n    - {name: azure, password: CANARY3, type: text}\nruncmd: []"
    ),
    "netplan_wireguard": (
        b"network:\n  tunnels:\n    wg0:\n      mode: wireguard\n      key:\n"
        b"        private: CANARY+priv=\n      peers:\n        - keys:\n"
        b"            public: pubkey=\n            shared: CANARY+psk="
    ),
    "der_private_key": DER_PRIVATE_KEY,
    "pfx_store": PFX_STORE,
    "der_ec_key": DER_EC_KEY,
    "der_certificate": DER_CERTIFICATE,
}

ALL_FORMS: dict[str, bytes] = {**TEXT_FORMS, **BLOCK_FORMS}
