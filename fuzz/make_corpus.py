"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): a few valid inputs of each
kind and the hostile ones the tests name. Re-run to regenerate: .venv/bin/python fuzz/make_corpus.py"""
import base64, io, json, struct, zlib
from pathlib import Path
from PIL import Image

root = Path(__file__).parent / "corpus"


def write(target, name, data):
    (root / target).mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (root / target / name).write_bytes(data)


def img(fmt, size=(20, 12), mode="RGB", **kw):
    im = Image.new(mode, size)
    im.putdata([tuple((x * 7 + y * 3 + c * 50) % 256 for c in range(len(mode))) if len(mode) > 1
                else (x * 9 + y) % 256 for y in range(size[1]) for x in range(size[0])])
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def png_header(w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", bytes([0x78, 0x9C, 3, 0, 0, 0, 0, 1])) + chunk(b"IEND", b""))


def tiff_header(w, h):
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 200),
               (278, 4, h), (279, 4, 16)]
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        v = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + v
    return (out + b"\0\0\0\0").ljust(216, b"\x55")


def webp_header(w, h):
    vp8l = b"\x2f" + struct.pack("<I", (w - 1) | ((h - 1) << 14)) + bytes(8)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBPVP8L" + struct.pack("<I", len(vp8l)) + vp8l


# image
write("image", "rgb.png", img("PNG"))
write("image", "gray.png", img("PNG", mode="L"))
write("image", "rgba.png", img("PNG", mode="RGBA"))
write("image", "rgb.jpg", img("JPEG", quality=80))
write("image", "gray.jpg", img("JPEG", mode="L"))
write("image", "lossless.webp", img("WEBP", lossless=True))
write("image", "lossy.webp", img("WEBP", quality=50))
write("image", "rgb.bmp", img("BMP"))
write("image", "rgb.tiff", img("TIFF"))
exif = Image.Exif()
exif[0x0112] = 6
write("image", "rotated.jpg", img("JPEG", exif=exif.tobytes()))
write("image", "truncated.jpg", img("JPEG")[:-40])
write("image", "huge-header.png", png_header(100_000, 100_000))
write("image", "huge-header.tiff", tiff_header(100_000, 100_000))
write("image", "huge-header.webp", webp_header(16_384, 16_384))
write("image", "garbage", b"\x89PNG\r\n\x1a\nnot really")

# options: first byte 0 = query, 1 = JSON options, 2 = query \n JSON
write("options", "query-steps", b"\x00steps=1:3&layers=conv1,logits&pool=mean")
write("options", "query-window", b"\x00window_ms=10:40&layers=all")
write("options", "query-flash", b"\x00presentation=flash&on_steps=2&top_k=3")
write("options", "query-huge-range", b"\x00steps=0:18446744073709551615")
write("options", "query-repeats", b"\x00steps=" + b",".join([b"1"] * 200))
write("options", "json-list", b"\x01" + json.dumps({"steps": [0, 2, 4], "layers": ["conv2", "conv3"]}).encode())
write("options", "json-mask", b"\x01" + json.dumps({"presentation": "mask", "on_steps": 2, "mask_steps": 3}).encode())
write("options", "json-nested", b"\x01" + json.dumps({"steps": [[1, [2]]], "x": {"y": 1}}).encode())
write("options", "both-sequence", b"\x02presentation=sequence&sequence=0:2,blank:1,1:2\n" + json.dumps({"per_timestep": True}).encode())
write("options", "both-overflow", b"\x02on_steps=99999999999\n" + json.dumps({"mask_steps": 2**64 - 1, "presentation": "mask"}).encode())

# multipart (boundary XB)
def form(parts):
    out = b""
    for name, ctype, data in parts:
        out += b"--XB\r\nContent-Disposition: form-data; name=\"" + name + b"\"; filename=\"f\"\r\n"
        if ctype:
            out += b"Content-Type: " + ctype + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + b"--XB--\r\n"

write("multipart", "one-image", form([(b"image", b"image/png", img("PNG"))]))
write("multipart", "image-mask-options", form([(b"image", b"image/png", img("PNG")), (b"mask", b"image/png", img("PNG", mode="L")),
                                                (b"options", b"application/json", b'{"presentation":"mask","mask_steps":2}')]))
write("multipart", "json-part", form([(b"meta", b"application/json", b"{}")]))
write("multipart", "many-parts", form([(b"i", None, b"x")] * 70))
write("multipart", "bad-options", form([(b"options", None, b"[1,2,3]")]))
write("multipart", "unterminated", b"--XB\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nabc")

# v2 body: 2 bytes of header length + 1 (0 = no header), then the body
def v2(obj, binary=b""):
    j = json.dumps(obj).encode()
    length = struct.pack("<H", len(j) + 1) if binary else b"\0\0"
    return length + j + binary

frames = [0.5] * (6 * 3 * 16 * 16)
write("v2_body", "frames-json", v2({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16], "data": frames}]}))
write("v2_body", "frames-binary", v2({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16],
                                                "parameters": {"binary_data_size": len(frames) * 4}}]},
                                     struct.pack("<%df" % len(frames), *frames)))
png = img("PNG")
write("v2_body", "images-json", v2({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                               "data": [base64.b64encode(png).decode()]}], "outputs": [{"name": "logits"}]}))
write("v2_body", "images-binary", v2({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                                 "parameters": {"binary_data_size": len(png) + 4}}],
                                      "parameters": {"binary_data_output": True}}, struct.pack("<I", len(png)) + png))
write("v2_body", "overflowing-shape", v2({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [2**63 - 1, 2**63 - 1, 3, 16, 16], "data": [1]}]}))
write("v2_body", "huge-binary-size", v2({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16],
                                                    "parameters": {"binary_data_size": 2**64 - 1}}]}, b"\0" * 8))
write("v2_body", "bytes-claims-more", v2({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                                                     "parameters": {"binary_data_size": 8}}]}, struct.pack("<I", 2**32 - 1) + bytes(4)))
write("v2_body", "params-nested", v2({"inputs": [], "parameters": {"a": [1, {"b": [2]}], "binary_data_output": "yes"}}))
