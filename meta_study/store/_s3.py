"""The few S3 calls a store's commit needs that pyarrow's filesystem lacks: conditional writes.

- :meth:`S3Objects.create`: PUT with ``If-None-Match: *``: creates the object only if no object
  has that key (the commit point: a manifest ``<version>.json``; taking a free lease);
- :meth:`S3Objects.replace`: PUT with ``If-Match: <etag>``: replaces the object only if it is
  still the version we read (renewing, releasing or taking over a lease);
- :meth:`S3Objects.get`: the object with its ETag, its last-modified time and the server's clock
  (lease expiry is judged on the server's clock: no clock skew between writers' hosts);
- :meth:`S3Objects.read`: a store file's bytes in one GET, its size checked from the response
  before the body is read (pyarrow's read asked a HEAD first: 2 requests per file).

S3 has offered both preconditions since 2024; MinIO and Ceph RGW speak them too, as does moto's
server used by the tests (``tests/s3_server.py``). An endpoint without them may answer such a PUT
with an error (a one-line refusal) or *ignore* the header and overwrite (S3 itself before 2024,
some S3-compatible stores): then two writers both took the lease and both "created" a version's
manifest, the second silently replacing the first's commit. So before its first conditional
write, :class:`S3Objects` checks once that the endpoint refuses a PUT whose precondition fails
(:meth:`S3Objects.require_conditional_writes`). The calls go through boto3 (a dependency of
meta-study), imported only when a store on ``s3://`` is written to; reading needs only pyarrow.

Where the objects are and who we are comes from the store URI as pyarrow reads it
(``s3://[KEY:SECRET@]BUCKET/PREFIX?endpoint_override=HOST:PORT&scheme=http&region=R``, and its
TLS options ``tls_ca_file_path``, ``tls_ca_dir_path``, ``tls_verify_certificates``) and,
for anything the URI does not say, from the standard AWS environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (MinIO, Ceph), profiles and instance roles: the
same sources pyarrow uses for the data files. Where none of them holds credentials, requests go
unsigned, as pyarrow's do: a public bucket reads, and a refusal says that no credentials were
found (:class:`NoCredentialsError`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import os
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError

#: How to get boto3, in every message that needs it.
INSTALL_S3 = "pip install boto3 (a dependency of meta-study: this environment lacks it)"

#: Objects from this size on are copied in parts of this size (bytes): S3 refuses a single
#: CopyObject above 5 GB, and a copy of a few GB in one request can outlast the client's 60 s read
#: timeout. 256 MiB parts: ~10 s each at ~25 MB/s; S3's 10,000-part limit is met by s3transfer
#: growing the parts of objects past 2.5 TB.
MULTIPART_COPY_BYTES = 256 * 1024 * 1024

#: Parts of one multipart copy in flight at once (threads; botocore's pool holds 10 connections).
COPY_THREADS = 8


class NoSuchBucketError(UserError, FileNotFoundError):
    """The URI's bucket does not exist at the endpoint: a one-line user error, and a
    :class:`FileNotFoundError` for callers that take S3's 404 as "no such bucket" (the sweep record)."""


def missing_bucket_error(shown: str, bucket: str) -> NoSuchBucketError:
    """The one line for a bucket the endpoint does not have, ``shown`` naming the input (a store's
    URI, "--storage-path s3://b/tune"): the store's and a sweep's storage check's alike."""
    return NoSuchBucketError(f"{shown}: the bucket {bucket!r} does not exist at this S3 endpoint "
                             "(create it first, or correct the URI)")


class NoCredentialsError(UserError, PermissionError):
    """No AWS credentials were found, the requests went unsigned (anonymous), and the endpoint
    refused one (a private bucket, or a write to a public one): a one-line user error (exit 2)
    saying so, never the endpoint's bare "AccessDenied" (exit 1) nor a fallback to pyarrow's
    listing, which would be refused too, in more words; a :class:`PermissionError` still for
    callers that take it as a failed request (a lease's heartbeat)."""


class NoConditionalWritesError(UserError, OSError):
    """The endpoint answers a conditional PUT with 501 Not Implemented: no commit can ever go
    there, so a one-line user error (exit 2), never one a scheduler retries (exit 1), as an
    endpoint that ignores them is; an :class:`OSError` still for callers that take it as a failed
    request (a lease's heartbeat)."""


class S3RequestError(OSError):
    """A request the endpoint answered with an error: an :class:`OSError` (one line) like any failed
    request, carrying the endpoint's ``code`` ("MalformedXML"; "" if it gave none) and HTTP
    ``status`` (None if unknown), for callers that tell a refusal of the call itself from a
    transient failure (:meth:`S3Objects.delete_many`)."""

    def __init__(self, message: str, code: str, status: int | None) -> None:
        super().__init__(message)
        self.code, self.status = code, status


#: HTTP statuses of an endpoint that refuses DeleteObjects itself, for every request: 400 (a
#: body or header it does not take: "MalformedXML", "InvalidRequest: Missing required header for
#: this request: Content-MD5", "MissingContentMD5" from S3-compatible stores that predate
#: botocore 1.36's CRC32 in its place; GCS's XML API "InvalidArgument: POST object expects
#: Content-Type multipart/form-data"), 405 (no POST there), 411 (wants a Content-Length), 501 (no
#: such call: "NotImplemented").
BATCH_REFUSED_STATUS = frozenset({400, 405, 411, 501})

#: Codes that come with a 400 but say nothing about the call: the same request may pass a moment
#: later (botocore retries them as transient; credentials that expired are refreshed).
TRANSIENT_400_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
                                 "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                                 "RequestThrottledException", "TooManyRequestsException", "SlowDown",
                                 "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
                                 "RequestExpired", "BadDigest", "IncompleteBody"})


def batch_refused(e: OSError) -> bool:
    """Whether a failed DeleteObjects was the endpoint refusing the call itself (it would refuse
    every one: see :data:`BATCH_REFUSED_STATUS`), as against a failure of this one request (no
    answer: a timeout, a reset connection; 5xx; 403, 409, 429 and the codes of
    :data:`TRANSIENT_400_CODES`), after which a later DeleteObjects may pass."""
    if not isinstance(e, S3RequestError):
        return False   # no answer (BotoCoreError: a timeout, a refused or reset connection)
    if e.code in ("NotImplemented", "MethodNotAllowed", "MalformedXML", "MissingContentMD5"):
        return True
    return e.status in BATCH_REFUSED_STATUS and e.code not in TRANSIENT_400_CODES


@dataclass(frozen=True)
class S3Object:
    """An object as read, with what conditional writes and lease expiry need."""

    data: bytes
    etag: str
    last_modified: _dt.datetime     # server time of the last write (UTC)
    server_now: _dt.datetime        # the server's clock when it answered (UTC)

    @property
    def age_s(self) -> float:
        """Seconds since the last write, on the server's clock (1 s resolution: HTTP dates)."""
        return (self.server_now - self.last_modified).total_seconds()


def _at(uri: str, rel: str) -> str:
    """:func:`._files.display_path` (imported here: ``_files`` imports this module)."""
    from ._files import display_path

    return display_path(uri, rel)


class S3Objects:
    """Conditional reads and writes of objects under one store's prefix.

    Args:
        uri: the store URI (``s3://...``), secrets included: it never appears in messages.
        shown: the URI as messages show it (secrets replaced).
        root: ``BUCKET/PREFIX`` as pyarrow parsed ``uri`` for the data files (percent-escapes
            decoded, the bucket's case kept). The conditional writes must use the same keys: with
            the URI's raw path, ``s3://lab/my%20store`` put its manifests under ``my%20store/``
            and its data under ``my store/``, and the store could not be read back.
    """

    def __init__(self, uri: str, shown: str, root: str | None = None) -> None:
        from ._files import display_uri   # here: _files imports this module

        p = urllib.parse.urlsplit(uri)
        # secrets out of every message even where a caller passed the URI less only its query:
        # 's3://KEY:SECRET@lab/x' named the secret in each failure of the sweep record's PUT
        self.shown = display_uri(shown)
        if root is None:
            # the bucket as written, as pyarrow takes it: urlsplit's hostname lowercased it (a legacy
            # bucket named with capitals: the sweep record was written to another bucket's keys)
            bucket = urllib.parse.unquote(p.netloc.rpartition("@")[2])
            self.bucket, self.prefix = bucket, urllib.parse.unquote(p.path).strip("/")
        else:
            bucket, _, prefix = root.strip("/").partition("/")
            self.bucket, self.prefix = bucket, prefix.strip("/")
        q = dict(urllib.parse.parse_qsl(p.query))
        self._endpoint = None
        if q.get("endpoint_override"):
            ep = q["endpoint_override"]
            self._endpoint = ep if "://" in ep else f"{q.get('scheme', 'https')}://{ep}"
        # pyarrow reads AWS_REGION where AWS_DEFAULT_REGION is unset; botocore reads only the
        # latter (it signed for us-east-1: a MinIO or Ceph with another region refused every write)
        self._region = q.get("region") or (None if os.environ.get("AWS_DEFAULT_REGION")
                                           else os.environ.get("AWS_REGION") or None)
        # pyarrow's TLS options for the data files (a MinIO with a private CA): boto3 verified
        # against its own bundle, so the store's files were read and staged but every conditional
        # write failed certificate verification
        off = q.get("tls_verify_certificates", "").strip().lower() in ("0", "false")
        self._verify = False if off else (q.get("tls_ca_file_path") or q.get("tls_ca_dir_path") or None)
        key = q.get("access_key") or (urllib.parse.unquote(p.username) if p.username else None)
        secret = q.get("secret_key") or (urllib.parse.unquote(p.password) if p.password else None)
        self._keys = (key, secret, q.get("session_token")) if key and secret else None
        self._client: Any = None
        self._conditional_checked = False
        # the endpoint refused DeleteObjects itself (batch_refused): one DELETE per object from then on
        self._batch_refused = False
        #: True once the client was set up without credentials (its requests go unsigned)
        self.unsigned = False

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
                from botocore.exceptions import BotoCoreError
            except ImportError:
                raise UserError(f"{self.shown}: writing a store on s3:// needs boto3 for its conditional "
                                f"writes: {INSTALL_S3}") from None
            custom = self._endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            # Path-style addressing for MinIO/Ceph endpoints (bucket names as hosts need DNS there).
            # Short timeouts and few retries: an unreachable endpoint fails in seconds, not minutes.
            opts: dict[str, Any] = dict(connect_timeout=10, read_timeout=60,
                                        retries={"max_attempts": 4, "mode": "standard"},
                                        s3={"addressing_style": "path" if custom else "auto"})
            if custom:
                # botocore >= 1.36 sends every PutObject with a CRC32 by default (over https as an
                # aws-chunked body with a trailer); S3-compatible stores that predate it (MinIO, Ceph
                # RGW, ...) refuse or mis-store that, and every commit failed. Checksums only where the API requires
                # them, as before 1.36 (the manifest carries its own sha256); an older botocore
                # knows neither option and sends plain bodies anyway
                opts.update(request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
            try:
                cfg = Config(**opts)
            except TypeError:
                opts.pop("request_checksum_calculation", None)
                opts.pop("response_checksum_validation", None)
                cfg = Config(**opts)
            kw: dict[str, Any] = {"config": cfg}
            if self._endpoint:
                kw["endpoint_url"] = self._endpoint
            if self._region:
                kw["region_name"] = self._region
            if self._verify is not None:
                kw["verify"] = self._verify
            if self._keys:
                kw.update(aws_access_key_id=self._keys[0], aws_secret_access_key=self._keys[1],
                          aws_session_token=self._keys[2])
            try:
                session = boto3.session.Session()
                if not self._keys and session.get_credentials() is None:
                    # no credentials anywhere (environment, files, profile, role): unsigned requests,
                    # as pyarrow sends for the data files, so a public bucket can be read. botocore
                    # refused every call ("Unable to locate credentials", exit 1) while pyarrow read
                    # the same objects. The session keeps what it resolved: the client's own lookup
                    # asks no provider (instance metadata, ~1-2 s off EC2) a second time
                    from botocore import UNSIGNED

                    kw["config"] = cfg.merge(Config(signature_version=UNSIGNED))
                    self.unsigned = True
                self._client = session.client("s3", **kw)
            except (BotoCoreError, ValueError) as e:
                # the AWS configuration, read here (AWS_PROFILE naming no profile, a malformed
                # config file or endpoint URL): it was a traceback from every writer and 'store unlock'
                raise UserError(f"{self.shown}: cannot set up the S3 client for its conditional writes: "
                                f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        return self._client

    def _call(self, what: str, rel: str, fn: Any, *, key: str | None = None, conditional: bool = True,
              **kw: Any) -> Any:
        """Run one S3 call on ``rel`` (or on ``key``, messages still naming ``rel``); None when its
        precondition failed, an OSError (one line) on any other failure (network, credentials,
        permissions); a :class:`UserError` for a call boto3 refuses to send (a bucket name S3
        cannot have). ``conditional`` False: a call that sends no precondition of ours (a copy, a
        delete), whose 412, 409 or 501 is an OSError naming the endpoint's code like any other
        failure. An error the endpoint answered is a :class:`S3RequestError` (its code and status)."""
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        try:
            return fn(Bucket=self.bucket, Key=self.key(key or rel), **kw)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the precondition failed; 409: a concurrent conditional write to the same key
            # was in flight (S3 answers one of the two racers so): both mean "someone else won"
            if conditional and (status in (412, 409) or code in ("PreconditionFailed", "ConditionalRequestConflict")):
                return None
            if self.unsigned and (status in (401, 403) or code in ("AccessDenied", "AllAccessDisabled")):
                # a 403 without an error body (a HEAD's, or a GET's from some endpoints) gives only
                # the status as its code: S3's name for it, as pyarrow's ACCESS_DENIED said
                why = code if code and not code.isdigit() else ("AccessDenied" if status == 403 else str(status))
                raise self.refused_unsigned(what, rel, why) from None
            if code == "NoSuchBucket":   # a 404 too: it was "FileNotFoundError: s3://b/st/_meta/LEASE.json"
                raise missing_bucket_error(self.shown, self.bucket) from None
            if status == 404 or code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{_at(self.shown, rel)}") from None
            if conditional and (code == "NotImplemented" or status == 501):
                raise NoConditionalWritesError(f"{self.shown}: the S3 endpoint does not support conditional writes "
                                               f"({what}: {code or status}), which a store's commit needs") from None
            raise S3RequestError(f"{_at(self.shown, rel)}: {what} failed: {code or status}: "
                                 f"{e.response.get('Error', {}).get('Message', '')}".rstrip(": "),
                                 code, status if isinstance(status, int) else None) from None
        except ParamValidationError as e:
            # refused by boto3 before any request (a bucket name S3 cannot have, 's3://lab%5Ex/st'):
            # the URI is wrong, not the machine. Its reason is on the lines after the first: it was
            # "conditional PUT failed: Parameter validation failed:" (exit 1), the reason cut off
            why = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
            if any(ln.startswith("Invalid bucket name") for ln in why):
                raise UserError(f"{self.shown}: {self.bucket!r} is not a valid S3 bucket name (letters, digits, "
                                "'.', '-' and '_' only); correct the URI") from None
            raise UserError(f"{_at(self.shown, rel)}: {what} refused by the S3 client: "
                            f"{'; '.join(why) or 'invalid parameters'}") from None
        except BotoCoreError as e:
            raise OSError(f"{_at(self.shown, rel)}: {what} failed: {str(e).splitlines()[0]}") from None

    def refused_unsigned(self, what: str, rel: str, why: str) -> NoCredentialsError:
        """The one line for a request of this unsigned client (:attr:`unsigned`) that the endpoint
        refused (``why``: its code, as "AccessDenied"), for boto3's and pyarrow's requests alike."""
        return NoCredentialsError(
            f"{self.shown}: no AWS credentials were found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            f"the credentials file, an instance role), so the {what} of {rel or 'the store'} was sent unsigned, "
            f"and the endpoint refused it ({why}): without credentials only a public bucket can be read, and "
            "none written")

    def require_conditional_writes(self, rel: str) -> None:
        """A one-line :class:`UserError` unless the endpoint honours ``If-None-Match: *`` and
        ``If-Match`` on PUT; checked once per instance, before its first conditional write (of
        ``rel``, which failures name): four requests on a probe object of our own under
        ``_meta/``, deleted after.

        An endpoint that ignores them answers 200 and overwrites: every writer then "took" the
        lease while another held it, and two writers racing for a version both "created" its
        manifest, the later one silently replacing the earlier's commit (its rows lost)."""
        if self._conditional_checked:
            return
        probe = f"_meta/.conditional-write-probe-{uuid.uuid4().hex}"
        put = self.client.put_object
        made = False   # no DELETE (four more retries) after a first PUT that never reached the endpoint
        try:
            first = self._call("conditional PUT", rel, put, key=probe, Body=b"1", IfNoneMatch="*")
            made = True
            if first is None and not self._exists(rel, probe):
                # refused the create of a key no object has (a proxy or an S3-compatible server
                # answering 412 to every conditional PUT): no writer could ever take the lease or
                # publish a version, and each waited out its lock timeout (15 minutes by default)
                raise UserError(f"{self.shown}: the S3 endpoint refused a conditional PUT of a new object "
                                "(If-None-Match: * on a key no object has), so no writer could take the store's "
                                "lease; writing a store safely needs conditional writes that work (AWS S3, a "
                                "current MinIO or Ceph RGW)")
            # the probe exists now (even if that reply was lost and a retry got 412): both must fail
            again = self._call("conditional PUT", rel, put, key=probe, Body=b"2", IfNoneMatch="*")
            stale = self._call("conditional PUT", rel, put, key=probe, Body=b"3",
                               IfMatch='"0123456789abcdef0123456789abcdef"')
        except OSError as e:   # botocore's words may name the URL: the key the caller writes, not the probe
            if isinstance(e, UserError) or self.key(probe) not in str(e):
                raise
            raise OSError(str(e).replace(self.key(probe), self.key(rel))) from None
        finally:
            if made:
                with contextlib.suppress(Exception):   # best effort: a stray probe under _meta/ is harmless
                    self.client.delete_object(Bucket=self.bucket, Key=self.key(probe))
        if again is not None or stale is not None:
            which = "If-None-Match: *" if again is not None else "If-Match"
            raise UserError(f"{self.shown}: the S3 endpoint ignores conditional writes (a PUT with {which} "
                            "overwrote an object it should have left alone); writing a store safely needs them "
                            "(AWS S3, a current MinIO or Ceph RGW honour them)")
        self._conditional_checked = True

    def exists(self, rel: str) -> bool:
        """Whether an object has the key ``rel`` exactly (one HEAD; ``up/a/`` is that object)."""
        return self._exists(rel, rel)

    def _exists(self, rel: str, key: str) -> bool:
        """Whether an object has the key ``key`` (one HEAD; failures name ``rel``)."""
        try:
            self._call("HEAD", rel, self.client.head_object, key=key)
        except NoSuchBucketError:
            raise
        except FileNotFoundError:
            return False
        return True

    def create(self, rel: str, data: bytes) -> str | None:
        """PUT ``data`` only if no object has this key; its ETag, or None if one does."""
        self.require_conditional_writes(rel)
        r = self._call("conditional PUT", rel, self.client.put_object, Body=data, IfNoneMatch="*")
        return None if r is None else str(r["ETag"])

    def replace(self, rel: str, data: bytes, etag: str) -> str | None:
        """PUT ``data`` only if the object is still at ``etag``; the new ETag, or None (also when
        the object is gone: S3 answers ``If-Match`` on a missing key with 404 NoSuchKey, not 412)."""
        self.require_conditional_writes(rel)
        try:
            r = self._call("conditional PUT", rel, self.client.put_object, Body=data, IfMatch=etag)
        except NoSuchBucketError:
            raise
        except FileNotFoundError:
            # the lease deleted between our GET and this PUT (a person, a lifecycle rule): the
            # precondition failed. It was an OSError naming the key: a waiting writer and
            # 'store unlock' failed instead of looking again, a heartbeat never noticed the loss
            return None
        return None if r is None else str(r["ETag"])

    def put(self, rel: str, data: bytes) -> None:
        """PUT ``data`` at ``rel`` (unconditional; one request, for objects below S3's 5 GB limit)."""
        if self._call("PUT", rel, self.client.put_object, Body=data) is None:   # 409: a concurrent write
            raise OSError(f"{_at(self.shown, rel)}: PUT failed: a concurrent write of the same key")

    def delete(self, rel: str) -> None:
        """DELETE the object ``rel`` (none there is no error). Only this: pyarrow's ``delete_file``
        then PUT an empty ``<parent>/`` marker, replacing the bytes of an object stored under that
        key (see :meth:`meta_study.store._files._Files.mkdirs`). It sends no precondition: a 409
        (S3's "OperationAborted") or 412 is a failed DELETE, an :class:`OSError`, never one done."""
        self._call("DELETE", rel, self.client.delete_object, conditional=False)

    def copy(self, src_rel: str, dst_rel: str, size: int | None = None) -> None:
        """Copy the object ``src_rel`` to ``dst_rel`` on the server, bytes and metadata (a
        :class:`FileNotFoundError` naming ``src_rel`` if there is none). Not pyarrow's ``move``:
        after its delete it PUT an empty ``<parent>/`` marker of the source, replacing the bytes
        of an object stored under that key (see :meth:`delete`).

        ``size``: the source's size in bytes where the caller knows it (a listing of the keys):
        below :data:`MULTIPART_COPY_BYTES`, one CopyObject. Otherwise boto3's managed copy: a HEAD
        of the source, then one CopyObject below that size, else a multipart copy (UploadPartCopy
        of byte ranges, each conditional on the source's ETag; metadata carried over by
        s3transfer). A single CopyObject is refused above 5 GB: a large partition file could
        never be moved into place, and every later commit failed finishing its version."""
        src = {"Bucket": self.bucket, "Key": self.key(src_rel)}
        # failures name the source and say what failed (the endpoint's code, or s3transfer's
        # reason): a 409 at the target or any failed step of a managed copy read "the object
        # changed while it was copied" of a source that had not changed
        what = "copy"
        if size is not None and 0 <= size < MULTIPART_COPY_BYTES:
            self._call(what, src_rel, self.client.copy_object, key=dst_rel, conditional=False, CopySource=src)
            return
        from boto3.s3.transfer import TransferConfig
        from s3transfer.exceptions import S3CopyFailedError

        cfg = TransferConfig(multipart_threshold=MULTIPART_COPY_BYTES, multipart_chunksize=MULTIPART_COPY_BYTES,
                             max_concurrency=COPY_THREADS)
        try:
            self._call(what, src_rel, lambda Bucket, Key: self.client.copy(  # noqa: N803
                src, Bucket, Key, Config=cfg), key=dst_rel, conditional=False)
        except S3CopyFailedError as e:
            # s3transfer's error for a part whose source ETag condition failed (412), and for
            # annotations it could not copy: no OSError, so it escaped every caller (a commit past
            # its commit point reported as failed). Never success: the caller then deletes the source
            raise OSError(f"{_at(self.shown, src_rel)}: {what} failed: {copy_failure(e)}") from None

    def sizes(self, under: str) -> dict[str, int]:
        """Size in bytes of every object whose key starts with ``under/`` (``under`` "" : the whole
        store), by key relative to the store's root, keys ending in '/' included (pyarrow lists
        those as directories, without their bytes). One LIST request per 1,000 keys."""
        cut = len(self.key(""))   # "PREFIX/", or "" for a store at the bucket's root
        out: dict[str, int] = {}
        kw: dict[str, Any] = {}
        while True:   # Key as the listing's Prefix: "PREFIX/<under>/" (the whole store for "")
            r = self._call("LIST", under, lambda Bucket, Key, **kw: self.client.list_objects_v2(  # noqa: N803
                Bucket=Bucket, Prefix=Key, **kw), key=f"{under.rstrip('/')}/" if under else "", **kw) or {}
            for o in r.get("Contents", []):
                out[o["Key"][cut:]] = int(o.get("Size") or 0)
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return out
            kw = {"ContinuationToken": r["NextContinuationToken"]}

    def entry(self, rel: str) -> int | None:
        """What is at ``rel``, as pyarrow's file info says it: the size in bytes of the object
        with that key; else -1 if keys lie below ``rel/`` (a "directory", a marker ``rel/``
        included); else None. One LIST (``Prefix=rel``, ``Delimiter='/'``; more only past 1,000
        keys that start with ``rel``), where pyarrow asked a HEAD and, for no object there (the
        usual case: finalize asks it of every new file's place), a LIST of ``rel/`` too."""
        key = self.key(rel)
        size: int | None = None
        below = False
        kw: dict[str, Any] = {}
        while True:
            r = self._call("LIST", rel, lambda Bucket, Key, **kw: self.client.list_objects_v2(  # noqa: N803
                Bucket=Bucket, Prefix=Key, Delimiter="/", **kw), **kw) or {}
            size = next((int(o.get("Size") or 0) for o in r.get("Contents", []) if o["Key"] == key), size)
            below = below or any(c["Prefix"] == f"{key}/" for c in r.get("CommonPrefixes", []))
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return size if size is not None else (-1 if below else None)
            kw = {"ContinuationToken": r["NextContinuationToken"]}

    def names(self, under: str) -> list[str]:
        """The names directly in the directory ``under`` ("" : the store's root), sorted, each once:
        the next path component of every key starting with ``under/``, whether that key is an
        object (``under/x``), a directory marker (``under/x/``, empty or holding bytes) or has keys
        below it. Not the marker ``under/`` itself, nor the empty component of keys ``under//...``
        (no store file has such a name). One LIST per 1,000 names (``Delimiter='/'``).

        pyarrow's listing of the same prefix named ``x`` twice where both ``under/x`` and keys
        below ``under/x/`` exist, and named keys ``under//...`` by the listed directory's own name,
        a name no key has there (``store check`` names such a key by its own, see :meth:`sizes`)."""
        pre = self.key(f"{under.strip('/')}/") if under.strip("/") else self.key("")
        out: set[str] = set()
        kw: dict[str, Any] = {}
        while True:
            r = self._call("LIST", under, lambda Bucket, Key, **kw: self.client.list_objects_v2(  # noqa: N803
                Bucket=Bucket, Prefix=pre, Delimiter="/", **kw), **kw) or {}
            out.update(o["Key"][len(pre):] for o in r.get("Contents", []))
            out.update(c["Prefix"][len(pre):].rstrip("/") for c in r.get("CommonPrefixes", []))
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return sorted(out - {""})
            kw = {"ContinuationToken": r["NextContinuationToken"]}

    def delete_many(self, rels: list[str] | dict[str, int]) -> None:
        """DELETE these objects (none there is no error), 1,000 per request; an :class:`OSError`
        naming the first that the endpoint failed to delete. Not pyarrow's ``delete_dir``: it then
        PUT an empty marker for the parent (``_staging/``), replacing any bytes stored there.

        A failed DeleteObjects (after the client retried it) is followed by one DELETE per
        object of its chunk, each of which must succeed (an OSError naming the first that did
        not: never reported deleted). Where the endpoint refused the call itself
        (:func:`batch_refused`: a 400, 405 or 501), this instance sends one DELETE per object from
        then on (a commit asks this once per partition: a refused batch before each pair of
        DELETEs cost a request more); any other failure (a timeout, a reset connection, a 5xx)
        falls back for that chunk only. Every failure made the fallback permanent before: after
        one timeout, every later commit of a long-lived store (a refit loop) sent a DELETE per
        object, twice the requests of its finalize."""
        rels = sorted(rels)
        for i in range(0, len(rels), 1000):
            chunk = rels[i:i + 1000]
            if self._batch_refused:
                for rel in chunk:
                    self.delete(rel)
                continue
            try:
                r = self._call("DELETE", chunk[0], lambda Bucket, Key, **kw: self.client.delete_objects(  # noqa: N803
                    Bucket=Bucket, Delete={"Objects": [{"Key": self.key(rel)} for rel in chunk], "Quiet": True}),
                    conditional=False)
            except OSError as e:   # (a 409 or 412 too: no precondition sent, so no None for "lost a race")
                # an S3-compatible store that refuses the batch (some want a Content-MD5, which
                # botocore >= 1.36 no longer sends): one DELETE per object, which every store takes;
                # a failure of this request only: so for this chunk, the batch asked again next time
                self._batch_refused = batch_refused(e)
                for rel in chunk:
                    self.delete(rel)
                continue
            errors = (r or {}).get("Errors") or []
            if errors:
                e = errors[0]
                raise OSError(f"{_at(self.shown, str(e.get('Key', self.key(chunk[0])))[len(self.key('')):])}: "
                              f"DELETE failed: {e.get('Code', '')}: {e.get('Message', '')}".rstrip(": "))

    def get(self, rel: str) -> S3Object | None:
        """The object, or None if there is none."""
        try:
            r = self._call("GET", rel, self.client.get_object)
        except NoSuchBucketError:
            raise
        except FileNotFoundError:
            return None
        if r is None:
            return None
        data = self._body(rel, r["Body"])
        modified = r["LastModified"].astimezone(_dt.timezone.utc)
        date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            now = email.utils.parsedate_to_datetime(date).astimezone(_dt.timezone.utc) if date else None
        except (TypeError, ValueError):
            now = None
        return S3Object(data, str(r["ETag"]), modified, now or _dt.datetime.now(_dt.timezone.utc))

    def read(self, rel: str, check: Callable[[int], None] | None = None) -> bytes:
        """The bytes of the object ``rel`` in one GET; a :class:`FileNotFoundError` if no object
        has that key. pyarrow's read asked a HEAD first, for the size: the GET's Content-Length
        says it too, so ``check`` gets it (bytes) before a byte of the body is read, and may raise
        to refuse the object, whose body is then dropped unread (a 50 GB object in a partition
        file's place is never read into memory). One GET also reads one version of the object:
        the HEAD's size and the GET's bytes could be those of two."""
        r = self._call("GET", rel, self.client.get_object)
        if r is None:   # 412/409 answer conditions this GET does not send
            raise OSError(f"{_at(self.shown, rel)}: GET failed: refused by a precondition it did not send")
        body, n = r["Body"], r.get("ContentLength")
        if check is not None and n is not None:
            try:
                check(int(n))
            except BaseException:
                with contextlib.suppress(Exception):
                    body.close()   # the connection is dropped, the rest of the body never read
                raise
        data = self._body(rel, body)
        if check is not None and n is None:   # no length announced (never from S3): checked after
            check(len(data))
        return data

    def _body(self, rel: str, body: Any) -> bytes:
        """A GET's body, read whole; a one-line OSError if reading it fails."""
        from botocore.exceptions import BotoCoreError

        try:   # the body streams after _call returned: a read timeout or a cut connection lands here
            return body.read()
        except (BotoCoreError, OSError) as e:
            raise OSError(f"{_at(self.shown, rel)}: GET failed while reading: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def copy_failure(e: BaseException) -> str:
    """What s3transfer's ``S3CopyFailedError`` says failed, as one line: a part's source ETag
    condition (412: the object changed while it was copied), or its own reason (annotations it
    could not copy to the target, with the failed names), cut to 300 characters."""
    text = " ".join(str(e).split())
    if "did not match expected ETag" in text:
        return "the object changed while it was copied (its ETag no longer matched the one read first)"
    return text[:300] or type(e).__name__
