"""mailgen -- a deterministic, realistic mail set for cairn's benchmark.

The same (users, messages, seed, big_mb) always gives the same messages,
folders, flags and dates: sizes follow a log-normal distribution (median
about 5 KB, as in ordinary mailboxes), larger messages carry a base64
attachment of random bytes (incompressible, as real attachments are), and
a few multi-megabyte messages are placed at seeded positions.

Python 3 standard library only; no knowledge of how mail is delivered.
"""
import base64
import dataclasses
import math
import random

FOLDERS = ("INBOX", "Sent", "Archive", "Lists", "Trash")
FOLDER_WEIGHTS = (55, 15, 15, 12, 3)
FLAG_CHANCES = ((r"\Seen", 0.7), (r"\Answered", 0.1), (r"\Flagged", 0.05),
                ("$Label1", 0.02))
WORDS = ("backup replication mailbox server report meeting budget invoice "
         "release schedule deadline review draft proposal customer ticket "
         "deploy rollback the a of and to in for on with is that this we "
         "please regards thanks attached find below monday quarter figures "
         "café über naïve").split()
ATTACH_OVER = 24 * 1024   # messages larger than this carry an attachment
EPOCH = 1700000000        # internal dates spread over two years before this


@dataclasses.dataclass
class Message:
    user: str
    index: int
    folder: str          # "INBOX" or a folder name under it
    flags: tuple
    internaldate: int    # seconds since the epoch
    body: bytes


def user_names(users):
    return ["bench%03d" % i for i in range(users)]


def _size(rng):
    """A log-normal size: median ~5 KB, 95th percentile ~60 KB."""
    size = int(math.exp(rng.gauss(math.log(5000), 1.3)))
    return max(600, min(size, 1024 * 1024))


def _text(rng, size):
    words = rng.choices(WORDS, k=max(12, size // 6))
    return "".join(" ".join(words[i:i + 12]) + "\r\n"
                   for i in range(0, len(words), 12))


def _body(rng, user, index, size):
    headers = [
        "From: Sender %d <sender%d@bench.example>" % (index % 17, index % 17),
        "To: %s <%s@bench.example>" % (user, user),
        "Subject: bench message %d of %s" % (index, user),
        "Date: Mon, %02d Jan 2024 %02d:%02d:00 +0000"
        % (1 + index % 28, index % 24, index % 60),
        "Message-ID: <%s.%d@bench.example>" % (user, index),
        "MIME-Version: 1.0",
    ]
    if size <= ATTACH_OVER:
        headers += ["Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
        return ("\r\n".join(headers) + "\r\n\r\n"
                + _text(rng, size - 300)).encode()
    boundary = "bench-%s-%d" % (user, index)
    text = _text(rng, 2000)
    raw = rng.randbytes(max(1, (size - 3000) * 3 // 4))
    encoded = base64.encodebytes(raw).decode().replace("\n", "\r\n")
    headers.append('Content-Type: multipart/mixed; boundary="%s"' % boundary)
    parts = ["--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s"
             % (boundary, text),
             "--%s\r\nContent-Type: application/octet-stream\r\n"
             "Content-Transfer-Encoding: base64\r\n"
             'Content-Disposition: attachment; filename="file%d.bin"\r\n\r\n%s'
             % (boundary, index, encoded),
             "--%s--\r\n" % boundary]
    return ("\r\n".join(headers) + "\r\n\r\n" + "".join(parts)).encode()


def big_positions(users, messages, seed, big_mb):
    """{(user index, message index): size in bytes} of the multi-MB
    messages: one per 2,000 messages, at least one."""
    if big_mb <= 0:
        return {}
    rng = random.Random("%s/big" % seed)
    count = max(1, users * messages // 2000)
    chosen = {}
    while len(chosen) < count:
        where = (rng.randrange(users), rng.randrange(messages))
        chosen[where] = int(rng.uniform(max(1.0, big_mb / 3.0), big_mb)
                            * 1024 * 1024)
    return chosen


def generate(users, messages, seed=1, big_mb=6):
    """Yields, per user, (user, [Message...]) in a fixed order."""
    big = big_positions(users, messages, seed, big_mb)
    for u, user in enumerate(user_names(users)):
        rng = random.Random("%s/%s" % (seed, user))
        batch = []
        for i in range(messages):
            size = big.get((u, i)) or _size(rng)
            folder = rng.choices(FOLDERS, FOLDER_WEIGHTS)[0]
            flags = tuple(f for f, chance in FLAG_CHANCES
                          if rng.random() < chance)
            date = EPOCH - rng.randrange(2 * 365 * 86400)
            batch.append(Message(user, i, folder, flags, date,
                                 _body(rng, user, i, size)))
        yield user, batch


def incremental(user, round_number, seed=1):
    """The one new message a user gets before an incremental pass."""
    rng = random.Random("%s/%s/new%d" % (seed, user, round_number))
    return _body(rng, user, 100000 + round_number, _size(rng))
