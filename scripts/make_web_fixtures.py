#!/usr/bin/env python3
"""Writes crates/corpus/tests/data/web/crawl.warc(.gz): a small web archive whose records are
framed and encoded as real crawls store them, built with Python's own codecs, gzip/zlib and
the reference `brotli` module (pip install brotli), independently of reasonlab's reader.

Each HTML or text page holds a math sentence in its own script; the reader test checks that
the sentence comes back decoded. Records that are not documents (script, style, JSON, image,
a redirect, a revisit, a not-modified response) must be skipped, each for its own reason.

Deterministic: gzip members carry mtime 0, so rerunning the script rewrites the same bytes.
Usage: python3 scripts/make_web_fixtures.py
"""

import gzip
import io
import pathlib
import zlib

import brotli

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/corpus/tests/data/web"

# (id, url, http head lines, body bytes). Heads are written with CRLF as servers send them.
RECORDS = []


def response(rid, url, head, body, rtype="response", status="HTTP/1.1 200 OK"):
    RECORDS.append((rid, url, rtype, status, head, body))


def html(title, sentence, meta=""):
    return f"<!DOCTYPE html><html><head>{meta}<title>{title}</title></head><body><p>{sentence}</p></body></html>"


# Character encodings, declared in the HTTP header, in a <meta>, or not at all.
response("gbk-header", "http://math.example.cn/gbk", ["Content-Type: text/html; charset=GBK"],
         html("勾股定理", "直角三角形中，两条直角边的平方和等于斜边的平方：a^2+b^2=c^2。").encode("gbk"))
response("gb2312-meta", "http://shuxue.example.cn/gb2312", ["Content-Type: text/html"],
         html("方程", "解方程 x+3=5，得 x=2。", '<meta http-equiv="Content-Type" content="text/html; charset=gb2312">').encode("gb2312"))
response("eucjp-meta", "http://sugaku.example.jp/eucjp", ["Content-Type: text/html"],
         html("三平方の定理", "直角三角形の斜辺の二乗は他の二辺の二乗の和に等しい。", '<meta charset="EUC-JP">').encode("euc_jp"))
response("sjis-undeclared", "http://sansu.example.jp/sjis", ["Content-Type: text/html"],
         html("素数", "素数とは、1とその数自身以外に正の約数を持たない自然数のことである。2、3、5、7は素数である。素数は無限に存在する。").encode("shift_jis"))
response("cp1251-meta", "http://matematika.example.ru/cp1251", ["Content-Type: text/html"],
         html("Теорема Пифагора", "Квадрат гипотенузы равен сумме квадратов катетов.", '<meta charset="windows-1251">').encode("cp1251"))
response("latin1-header", "http://maths.example.fr/latin1", ["Content-Type: text/html; charset=ISO-8859-1"],
         html("Théorème", "Le carré de l'hypoténuse est égal à la somme des carrés des côtés.").encode("latin-1"))
response("plain-text", "http://example.org/notes.txt", ["Content-Type: text/plain; charset=utf-8"],
         "Lemma: every bounded monotone sequence converges.\n".encode())

# Framings and content codings.
page = html("Chunked", "The derivative of x^2 is 2x.").encode()
chunked = b"".join(b"%x\r\n%s\r\n" % (len(page[i:i + 40]), page[i:i + 40]) for i in range(0, len(page), 40)) + b"0\r\n\r\n"
response("chunked", "http://example.org/chunked", ["Content-Type: text/html; charset=utf-8", "Transfer-Encoding: chunked"], chunked)


def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(b)
    return out.getvalue()


response("gzip", "http://example.org/gzip", ["Content-Type: text/html; charset=utf-8", "Content-Encoding: gzip"],
         gz(html("Gzip", "The integral of 1/x is ln|x| + C.").encode()))
response("deflate", "http://example.org/deflate", ["Content-Type: text/html; charset=utf-8", "Content-Encoding: deflate"],
         zlib.compress(html("Deflate", "The sum of the first n odd numbers is n^2.").encode()))
response("brotli", "http://example.org/brotli", ["Content-Type: text/html; charset=utf-8", "Content-Encoding: br"],
         brotli.compress(html("Brotli", "Every finite group of prime order is cyclic.").encode()))
gz_page = gz(html("Chunked gzip", "A circle of radius r has area pi r^2.").encode())
response("gzip-chunked", "http://example.org/gzip-chunked",
         ["Content-Type: text/html", "Content-Encoding: gzip", "Transfer-Encoding: chunked"],
         b"%x\r\n%s\r\n0\r\n\r\n" % (len(gz_page), gz_page))
# Common Crawl's convention: the payload is stored decoded and the header renamed.
response("cc-renamed", "http://example.org/renamed",
         ["Content-Type: text/html", "X-Crawler-Content-Encoding: gzip", "X-Crawler-Transfer-Encoding: chunked"],
         html("Renamed", "The harmonic series diverges.").encode())
# No Content-Type: sniffed as HTML.
response("sniffed-html", "http://example.org/sniffed", [], html("Sniffed", "Two lines meet in at most one point.").encode())

# Not documents.
response("javascript", "http://example.org/app.js", ["Content-Type: application/javascript"], b"var x = 1 + 2; console.log(x);")
response("css", "http://example.org/site.css", ["Content-Type: text/css"], b"body { margin: 0 }")
response("json", "http://example.org/api.json", ["Content-Type: application/json"], b'{"answer": 42}')
response("png", "http://example.org/logo.png", ["Content-Type: image/png"], b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
response("binary-untyped", "http://example.org/blob", [], b"\x00\x01\x02\x03 binary \x00")
response("redirect", "http://example.org/old", ["Location: http://example.org/new", "Content-Type: text/html"],
         b"<html><body>Moved</body></html>", status="HTTP/1.1 301 Moved Permanently")
# A revisit: the payload was archived before, only the response head is stored.
response("revisit", "http://math.example.cn/gbk", ["Content-Type: text/html; charset=GBK"], b"",
         rtype="revisit", status="HTTP/1.1 304 Not Modified")


def warc_record(rid, url, rtype, status, head, body):
    block = (status + "\r\n" + "".join(h + "\r\n" for h in head) + "\r\n").encode() + body
    extra = ""
    if rtype == "revisit":
        extra = "WARC-Profile: http://netpreserve.org/warc/1.1/revisit/identical-payload-digest\r\n"
    warc = (
        "WARC/1.1\r\n"
        f"WARC-Type: {rtype}\r\n"
        f"WARC-Target-URI: {url}\r\n"
        f"WARC-Record-ID: <urn:test:{rid}>\r\n"
        "WARC-Date: 2024-01-01T00:00:00Z\r\n"
        f"{extra}"
        "Content-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(block)}\r\n\r\n"
    ).encode()
    return warc + block + b"\r\n\r\n"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    records = [warc_record(*r) for r in RECORDS]
    (OUT / "crawl.warc").write_bytes(b"".join(records))
    # One gzip member per record, as Common Crawl writes `.warc.gz`.
    (OUT / "crawl.warc.gz").write_bytes(b"".join(gz(r) for r in records))
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
