//! Turning an uploaded, encoded image into the model's input tensor.
//!
//! A request carries JPEG/PNG/WebP/BMP/TIFF bytes; a ConvRNN export wants one `C×H×W` float32
//! frame, normalised with the mean/std from the model's `convrnn` metadata (see
//! `docs/model-format.md`, `input`). This module does that, and nothing else:
//!
//! 1. **Limits first.** The body size is checked, then the pixel count is read from the header
//!    and checked *before* any pixel is decoded, so a few-KB "decompression bomb" (a PNG that
//!    claims 20000×20000) costs microseconds and no memory. `image::Limits::max_alloc` is set
//!    as a second guard in case a decoder allocates more than the header suggests.
//! 2. **Decode + orient.** The format is guessed from the magic bytes (never from a filename or
//!    a content type, which clients get wrong). EXIF orientation is applied, as phones store
//!    portrait photos as rotated landscape pixels plus a tag.
//! 3. **To RGB.** Grayscale is replicated into three channels (policy `replicate`). Alpha is
//!    composited over the *model's mean colour* (`round(mean * 255)`), not over black or white:
//!    after normalisation the mean colour is ~0 in every channel, i.e. "no signal", which is the
//!    most neutral thing a vision model can be shown where the stimulus is absent. Black or
//!    white backgrounds would inject a strong, arbitrary luminance contrast at the silhouette
//!    and shift the image statistics (white is right for documents, not for stimuli).
//! 4. **Resize** to the export's `width × height`, either `shorter-side-then-center-crop` or
//!    `stretch`, with an antialiased **bilinear** (triangle) filter — see [`RESIZE_FILTER_DOC`].
//! 5. **Normalise** `(x / 255 - mean) / std` in f32 and lay out channel-major (CHW).
//!
//! ## Python reference (for parity tests)
//! ```python
//! from PIL import Image, ImageOps
//! import numpy as np
//! im = ImageOps.exif_transpose(Image.open(path))
//! if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
//!     bg = tuple(round(m * 255) for m in mean) + (255,)
//!     im = Image.alpha_composite(Image.new("RGBA", im.size, bg), im.convert("RGBA"))
//! im = im.convert("RGB")
//! if resize == "shorter-side-then-center-crop":
//!     im = ImageOps.fit(im, (W, H), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
//! else:  # stretch
//!     im = im.resize((W, H), Image.Resampling.BILINEAR)
//! x = np.asarray(im, dtype=np.float32) / np.float32(255)
//! x = ((x - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)  # CHW
//! ```
//! `fast_image_resize` implements Pillow's convolution resampler (same kernels, same support
//! scaling, the same fixed-point 8-bit passes), and its centre crop is Pillow's `ImageOps.fit`
//! box (fractional, not rounded to whole pixels), so the two agree to about one 8-bit level.
//! JPEG decoders differ slightly (IDCT, chroma upsampling): compare JPEG inputs with a tolerance
//! of a few levels, lossless formats with ±1.

use std::io::Cursor;

use fast_image_resize as fr;
// `::image` (the crate) rather than `image`, since this module is itself called `image`.
use ::image::metadata::Orientation;
use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Which resampling filter [`preprocess`] uses, and why (kept as a constant so the server can
/// print it in `inspect`/docs output).
///
/// Bilinear with antialiasing (the kernel is widened by the downscale factor, as in Pillow and
/// in torchvision's `Resize(antialias=True)`): it is torchvision's default interpolation, so it
/// matches how most vision models were trained; it never rings (Catmull-Rom/bicubic overshoots
/// at edges, which for large downscales to 28×28 or 32×32 inputs adds halos); and it is the
/// cheapest antialiased kernel. Pillow's `resize()` defaults to BICUBIC for RGB since 9.x, so a
/// Python reference must pass `Image.Resampling.BILINEAR` explicitly.
pub const RESIZE_FILTER_DOC: &str =
    "bilinear (triangle), antialiased: Pillow Image.Resampling.BILINEAR / ImageOps.fit";

pub use crate::model::metadata::{GrayscalePolicy, ResizePolicy};

/// The model's input description (the metadata's `input` object).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Number of channels the model takes; only 3 (RGB) is supported.
    pub channels: usize,
    pub height: u32,
    pub width: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizePolicy,
    pub grayscale: GrayscalePolicy,
    /// `resize_shorter_side` of the metadata: the shorter side's length before the centre crop.
    pub shorter_side: Option<u32>,
}

impl Preprocess {
    /// What the model's contract asks for.
    pub fn for_input(input: &crate::model::metadata::InputSpec) -> Self {
        Self {
            channels: input.channels,
            height: input.height,
            width: input.width,
            mean: input.mean,
            std: input.std,
            resize: input.resize,
            grayscale: input.grayscale,
            shorter_side: input.resize_shorter_side,
        }
    }

    /// Number of f32 values [`preprocess`] returns: `channels * height * width`.
    pub fn output_len(&self) -> usize {
        self.channels * self.height as usize * self.width as usize
    }

    /// Check the configuration once (at model load), so that bad metadata is a load error and
    /// not a per-request one.
    pub fn validate(&self) -> Result<(), ImageError> {
        if self.channels != 3 {
            return Err(ImageError::InvalidConfig(format!(
                "channels = {}; only 3 (RGB) is supported",
                self.channels
            )));
        }
        if self.width == 0 || self.height == 0 {
            return Err(ImageError::InvalidConfig(format!(
                "input size {}x{} is empty",
                self.width, self.height
            )));
        }
        // An export's frame is small; anything above 2^28 values is a metadata error and would
        // make per-request allocations absurd.
        if (self.width as u64) * (self.height as u64) * 3 > (1 << 28) {
            return Err(ImageError::InvalidConfig(format!(
                "input size {}x{} is unreasonably large",
                self.width, self.height
            )));
        }
        if let Some(side) = self.shorter_side {
            if self.resize != ResizePolicy::ShorterSideThenCenterCrop {
                return Err(ImageError::InvalidConfig(format!(
                    "resize_shorter_side {side} needs resize = shorter-side-then-center-crop"
                )));
            }
            // Smaller than the input, the scaled image would not cover the crop.
            if side < self.width.max(self.height) || side > 1 << 16 {
                return Err(ImageError::InvalidConfig(format!(
                    "resize_shorter_side {side} must lie between the input size {}x{} and 65536",
                    self.width, self.height
                )));
            }
        }
        for (c, (&m, &s)) in self.mean.iter().zip(&self.std).enumerate() {
            if !m.is_finite() || !s.is_finite() || s == 0.0 {
                return Err(ImageError::InvalidConfig(format!(
                    "channel {c}: mean {m} / std {s} must be finite and std non-zero"
                )));
            }
        }
        Ok(())
    }
}

/// Per-request resource limits (from `--max-image-pixels` and `--max-body-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width * height` accepted, checked from the header before decoding.
    pub max_pixels: u64,
    /// Largest encoded input accepted.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// The server's defaults: 40 megapixels, 64 MiB.
    fn default() -> Self {
        Self {
            max_pixels: 40_000_000,
            max_bytes: 64 << 20,
        }
    }
}

/// Why an image could not be turned into a tensor. Everything but `InvalidConfig` is the
/// client's fault (HTTP 400, or 413 for the two size errors).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is empty (0 bytes)")]
    Empty,
    #[error("unsupported image format: {0} (supported: JPEG, PNG, WebP, BMP, TIFF)")]
    UnsupportedFormat(String),
    #[error("encoded image is {len} bytes, over the limit of {max_bytes}")]
    BodyTooLarge { len: usize, max_bytes: usize },
    #[error(
        "image is {width}x{height} pixels, over the limit of {max_pixels} pixels and 65535 a side"
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
    #[error("decoding the image would need more memory than allowed: {0}")]
    MemoryLimit(String),
    #[error("invalid preprocessing configuration: {0}")]
    InvalidConfig(String),
    #[error("internal resize error: {0}")]
    Resize(String),
}

impl ImageError {
    fn from_image(e: ::image::ImageError) -> Self {
        use ::image::ImageError as E;
        match e {
            E::Unsupported(u) => ImageError::UnsupportedFormat(u.to_string()),
            E::Limits(l) => ImageError::MemoryLimit(l.to_string()),
            // Truncated streams surface as I/O errors (UnexpectedEof) from the in-memory reader.
            E::IoError(io) => ImageError::Corrupt(io.to_string()),
            other => ImageError::Corrupt(other.to_string()),
        }
    }
}

/// Bytes per pixel of the largest decode buffer a supported format can produce (RGBA, 16 bit);
/// used to size `image::Limits::max_alloc` from the pixel limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Longest side accepted, whatever the pixel count: the largest a JPEG can be. Given to the
/// decoders as their strict width and height limits, which they check on the header, since
/// `max_alloc` is best effort (some decoders allocate without asking it).
pub const MAX_SIDE: u32 = 65_535;

/// The checks every encoded image passes before any decoder sees it: size, a supported format
/// (from the magic bytes), and for JPEG an end-of-image marker.
fn check_encoded(bytes: &[u8], limits: &Limits) -> Result<ImageFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::BodyTooLarge {
            len: bytes.len(),
            max_bytes: limits.max_bytes,
        });
    }
    let format = ::image::guess_format(bytes)
        .map_err(|_| ImageError::UnsupportedFormat("unrecognised magic bytes".to_string()))?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Tiff
    ) {
        return Err(ImageError::UnsupportedFormat(format!("{format:?}")));
    }
    if format == ImageFormat::Jpeg && !jpeg_looks_complete(bytes) {
        return Err(ImageError::Corrupt(
            "JPEG is truncated (no end-of-image marker after the last scan)".to_string(),
        ));
    }
    Ok(format)
}

/// Open a decoder over `bytes` (already through [`check_encoded`], which gave `format`),
/// reading the header only.
fn open_decoder<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    limits: &Limits,
) -> Result<impl ImageDecoder + 'a, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Second guard: even if a decoder allocates more than width*height suggests (or a header
    // lies), no single allocation may exceed what the largest allowed image would need.
    let mut il = ::image::Limits::default();
    il.max_image_width = Some(MAX_SIDE);
    il.max_image_height = Some(MAX_SIDE);
    il.max_alloc = Some(
        limits
            .max_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .max(1 << 20),
    );
    reader.limits(il);
    reader.into_decoder().map_err(ImageError::from_image)
}

fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!(
            "header says the image is {width}x{height}"
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels
        || width > MAX_SIDE
        || height > MAX_SIDE
    {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Zune-jpeg (like browsers) renders a truncated JPEG by filling the missing part with gray,
/// which would make the model classify half an image without anyone noticing. Pillow refuses
/// such files ("image file is truncated"), and so do we: a complete JPEG has an EOI marker
/// (FF D9) after its last SOS (FF DA). Entropy-coded data cannot contain FF D9 (0xFF is
/// stuffed as FF 00), and an EXIF thumbnail's EOI comes before the main image's SOS, so
/// searching from the end is reliable and cheap (it usually stops within the last bytes).
fn jpeg_looks_complete(bytes: &[u8]) -> bool {
    let Some(eoi) = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]) else {
        return false;
    };
    !bytes[eoi + 2..].windows(2).any(|w| w == [0xFF, 0xDA])
}

/// Image dimensions `(width, height)` from the header only, without decoding pixels.
///
/// These are the stored dimensions: an EXIF rotation of 90° swaps them in the decoded image
/// (the pixel count, which is what limits care about, is the same). Only the body-size limit is
/// applied here, at its default (64 MiB); the caller compares the result with its pixel limit.
pub fn probe_dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let limits = Limits::default();
    let format = check_encoded(bytes, &limits)?;
    if format == ImageFormat::Jpeg {
        if let Some(dims) = jpeg_frame_size(bytes) {
            return Ok(dims);
        }
    }
    Ok(open_decoder(bytes, format, &limits)?.dimensions())
}

/// Width and height from a JPEG's frame header (SOFn), walking the marker segments without
/// decoding anything; `None` if the walk reaches a scan or the end first (the caller then asks a
/// real decoder). Opening a decoder would build the Huffman tables just to read two numbers.
fn jpeg_frame_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2; // after SOI (FF D8)
    loop {
        // Markers may be preceded by any number of FF fill bytes.
        while *bytes.get(i)? == 0xFF && *bytes.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        match marker {
            // Standalone markers: no length field.
            0x01 | 0xD0..=0xD7 => i += 2,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let seg = bytes.get(i + 4..i + 9)?; // precision, height, width
                let h = u32::from(u16::from_be_bytes([seg[1], seg[2]]));
                let w = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
                return Some((w, h));
            }
            0xDA | 0xD9 => return None,
            _ => {
                let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

/// Decode an encoded image (JPEG/PNG/WebP/BMP/TIFF, format guessed from magic bytes), honour
/// EXIF orientation, convert grayscale (replicate) and alpha (composite over the mean colour,
/// see the module docs) to RGB, resize per `p.resize` to `p.width × p.height`, and normalise
/// `(x / 255 - mean) / std`, returning CHW f32 of length `3 * height * width`.
///
/// The pixel limit is checked from the header before any pixel is decoded. Never panics on
/// bad input: every failure is an [`ImageError`].
pub fn preprocess(bytes: &[u8], p: &Preprocess, limits: &Limits) -> Result<Vec<f32>, ImageError> {
    p.validate()?;
    let img = decode(bytes, limits)?;

    let bg = background(p);
    // Gray stays one channel through the resize (a third of the work) and is replicated when
    // normalising; everything else becomes packed RGB8.
    let (pixels, src_w, src_h, gray) = match img {
        DynamicImage::ImageLuma8(buf) => {
            let (w, h) = buf.dimensions();
            (buf.into_raw(), w, h, true)
        }
        DynamicImage::ImageRgb8(buf) => {
            let (w, h) = buf.dimensions();
            (buf.into_raw(), w, h, false)
        }
        other if other.color().has_alpha() => {
            let rgba = other.into_rgba8();
            let (w, h) = rgba.dimensions();
            (composite_over(rgba.as_raw(), bg), w, h, false)
        }
        other if other.color().channel_count() == 1 => {
            let l = other.into_luma8();
            let (w, h) = l.dimensions();
            (l.into_raw(), w, h, true)
        }
        other => {
            let rgb = other.into_rgb8();
            let (w, h) = rgb.dimensions();
            (rgb.into_raw(), w, h, false)
        }
    };
    let GrayscalePolicy::Replicate = p.grayscale;

    let resized = resize(&pixels, src_w, src_h, gray, p)?;
    Ok(normalise(&resized, gray, p))
}

/// Decode and orient: the pixels as the viewer sees them.
fn decode(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, ImageError> {
    let format = check_encoded(bytes, limits)?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, limits);
    }
    let mut decoder = open_decoder(bytes, format, limits)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limits)?;
    // A broken EXIF block is not worth rejecting a photo for: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(ImageError::from_image)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// JPEG through zune-jpeg directly, the decoder `image` wraps. The wrapper parses the headers
/// and builds the Huffman tables three times per image (to open, for EXIF, to decode), the
/// largest cost of decoding a model-sized image; here they are parsed once. Output is the same
/// for every JPEG `image` decodes to
/// gray or RGB (one-component stays gray; YCbCr, CMYK and YCCK become RGB); the exotic
/// four-component RGBA colour space, which `image` would keep as RGBA, becomes RGB here.
fn decode_jpeg(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, ImageError> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let jpeg_err = |e: zune_jpeg::errors::DecodeErrors| match e {
        zune_jpeg::errors::DecodeErrors::Unsupported(u) => {
            ImageError::UnsupportedFormat(format!("JPEG: {u:?}"))
        }
        other => ImageError::Corrupt(format!("JPEG: {other}")),
    };
    // Pixel counts are limited by `check_pixels` below, from the header, as for all formats.
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(jpeg_err)?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| ImageError::Corrupt("JPEG: no frame header".to_string()))?;
    let (w, h) = (w as u32, h as u32);
    check_pixels(w, h, limits)?;
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    let gray = decoder.input_colorspace() == Some(ColorSpace::Luma);
    if gray {
        // RGB (the default) was set when the headers were read; a one-component image can be
        // written out as one channel, which the resize then handles at a third of the cost.
        decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
    }
    let pixels = decoder.decode().map_err(jpeg_err)?;
    let size_error = || ImageError::Corrupt("JPEG: decoded size does not match the header".into());
    let mut img = if gray {
        DynamicImage::ImageLuma8(::image::GrayImage::from_raw(w, h, pixels).ok_or_else(size_error)?)
    } else {
        DynamicImage::ImageRgb8(::image::RgbImage::from_raw(w, h, pixels).ok_or_else(size_error)?)
    };
    img.apply_orientation(orientation);
    Ok(img)
}

/// The compositing background: the model's mean colour in 8-bit, so transparent pixels
/// normalise to (almost exactly) zero.
fn background(p: &Preprocess) -> [u8; 3] {
    p.mean.map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// `round((c * a + bg * (255 - a)) / 255)` for straight (non-premultiplied) RGBA8.
fn composite_over(rgba: &[u8], bg: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for c in 0..3 {
            let x = u32::from(px[c]) * a + u32::from(bg[c]) * (255 - a);
            // Exact round-to-nearest of x / 255 for x <= 255 * 255 (Pillow's DIV255 trick).
            out.push((((x + 128) + ((x + 128) >> 8)) >> 8) as u8);
        }
    }
    out
}

/// Resize packed 8-bit pixels (1 or 3 channels) to the target size per the policy.
fn resize(
    pixels: &[u8],
    src_w: u32,
    src_h: u32,
    gray: bool,
    p: &Preprocess,
) -> Result<Vec<u8>, ImageError> {
    let pixel_type = if gray {
        fr::PixelType::U8
    } else {
        fr::PixelType::U8x3
    };
    let crop_box = match (p.resize, p.shorter_side) {
        (ResizePolicy::ShorterSideThenCenterCrop, Some(side)) => {
            Some(shorter_side_crop(src_w, src_h, side, p.width, p.height))
        }
        _ => None,
    };
    let whole = (0.0, 0.0, f64::from(p.width), f64::from(p.height));
    if src_w == p.width && src_h == p.height && crop_box.is_none_or(|b| b == whole) {
        // Same size: the identity (the crop box is the whole image).
        return Ok(pixels.to_vec());
    }
    let src = fr::images::ImageRef::new(src_w, src_h, pixels, pixel_type)
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    let mut dst = fr::images::Image::new(p.width, p.height, pixel_type);
    let mut options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    if let Some((left, top, width, height)) = crop_box {
        options = options.crop(left, top, width, height);
    } else if p.resize == ResizePolicy::ShorterSideThenCenterCrop {
        // The crop box is Pillow's ImageOps.fit box: the largest centred region of the
        // target's aspect ratio, in fractional source pixels; resizing it to the target is
        // the same as "scale the shorter side, then centre-crop" without rounding the
        // intermediate size or the crop offset to whole pixels.
        options = options.fit_into_destination(Some((0.5, 0.5)));
    }
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    Ok(dst.into_vec())
}

/// The source region (left, top, width, height, in fractional pixels) that becomes the centre
/// `width x height` once the shorter side is scaled to `side`.
fn shorter_side_crop(
    src_w: u32,
    src_h: u32,
    side: u32,
    width: u32,
    height: u32,
) -> (f64, f64, f64, f64) {
    let scale = f64::from(side) / f64::from(src_w.min(src_h));
    let (w, h) = (f64::from(width) / scale, f64::from(height) / scale);
    (
        (f64::from(src_w) - w) / 2.0,
        (f64::from(src_h) - h) / 2.0,
        w,
        h,
    )
}

/// `(x / 255 - mean) / std`, HWC u8 -> CHW f32, through a per-channel 256-entry table (same
/// f32 arithmetic as torchvision's ToTensor + Normalize, so values are bit-identical).
fn normalise(pixels: &[u8], gray: bool, p: &Preprocess) -> Vec<f32> {
    let plane = p.width as usize * p.height as usize;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - p.mean[c]) / p.std[c];
        }
    }
    let mut out = vec![0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    if gray {
        for (i, &v) in pixels.iter().take(plane).enumerate() {
            let v = usize::from(v);
            r[i] = lut[0][v];
            g[i] = lut[1][v];
            b[i] = lut[2][v];
        }
    } else {
        for (i, px) in pixels.chunks_exact(3).take(plane).enumerate() {
            r[i] = lut[0][usize::from(px[0])];
            g[i] = lut[1][usize::from(px[1])];
            b[i] = lut[2][usize::from(px[2])];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba};
    use std::time::Instant;

    const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    fn prep(w: u32, h: u32, resize: ResizePolicy) -> Preprocess {
        Preprocess {
            channels: 3,
            height: h,
            width: w,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            resize,
            grayscale: GrayscalePolicy::Replicate,
            shorter_side: None,
        }
    }

    fn limits() -> Limits {
        Limits::default()
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode test image");
        out.into_inner()
    }

    /// The value a pixel of 8-bit value `v` in channel `c` must normalise to.
    fn norm(v: u8, c: usize) -> f32 {
        (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    }

    /// Pixel (x, y) of channel c of a CHW output, back in 8-bit units.
    fn px8(out: &[f32], p: &Preprocess, c: usize, x: u32, y: u32) -> f32 {
        let plane = (p.width * p.height) as usize;
        let v = out[c * plane + (y * p.width + x) as usize];
        (v * p.std[c] + p.mean[c]) * 255.0
    }

    fn assert_rgb(out: &[f32], p: &Preprocess, x: u32, y: u32, rgb: [u8; 3], tol: f32) {
        for (c, &want) in rgb.iter().enumerate() {
            let got = px8(out, p, c, x, y);
            assert!(
                (got - want as f32).abs() <= tol,
                "pixel ({x},{y}) channel {c}: got {got}, want {want} ± {tol}"
            );
        }
    }

    /// A smooth gradient, so that lossy codecs stay close to the original.
    fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        })
    }

    fn halves(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    #[test]
    fn every_format_decodes_to_the_same_tensor() {
        let img = DynamicImage::ImageRgb8(gradient(64, 48));
        let p = prep(32, 32, ResizePolicy::ShorterSideThenCenterCrop);
        let reference = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        assert_eq!(reference.len(), 3 * 32 * 32);
        for (format, tol) in [
            (ImageFormat::Bmp, 0.0),
            (ImageFormat::Tiff, 0.0),
            (ImageFormat::WebP, 0.0), // image's WebP encoder is lossless
            (ImageFormat::Jpeg, 8.0),
        ] {
            let bytes = encode(&img, format);
            assert_eq!(probe_dimensions(&bytes).unwrap(), (64, 48), "{format:?}");
            let out = preprocess(&bytes, &p, &limits())
                .unwrap_or_else(|e| panic!("{format:?} failed: {e}"));
            let worst = out
                .iter()
                .zip(&reference)
                .enumerate()
                .map(|(i, (a, b))| (a - b).abs() * p.std[i / (32 * 32)] * 255.0)
                .fold(0f32, f32::max);
            assert!(worst <= tol + 1e-3, "{format:?}: off by {worst} levels");
        }
    }

    #[test]
    fn uniform_image_normalises_exactly() {
        let p = prep(16, 16, ResizePolicy::ShorterSideThenCenterCrop);
        let color = [100u8, 150, 200];
        // Same size as the target (no resampling), then a downscale and an upscale: a uniform
        // image must stay uniform through the filter, so every value is exact.
        for (w, h) in [(16, 16), (40, 30), (7, 9)] {
            let img = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(w, h, Rgb(color)));
            let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
            for c in 0..3 {
                let want = norm(color[c], c);
                let plane = &out[c * 256..(c + 1) * 256];
                assert!(
                    plane.iter().all(|&v| v == want),
                    "{w}x{h} channel {c}: want {want}, got {:?}",
                    &plane[..4]
                );
            }
        }
        // And the table is the formula, bit for bit.
        assert_eq!(norm(0, 0), (0.0 - 0.485f32) / 0.229f32);
        assert_eq!(norm(255, 2), (1.0 - 0.406f32) / 0.225f32);
    }

    #[test]
    fn grayscale_is_replicated() {
        let p = prep(8, 8, ResizePolicy::Stretch);
        let l8 = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(8, 8, Luma([77u8])));
        let out = preprocess(&encode(&l8, ImageFormat::Png), &p, &limits()).unwrap();
        for c in 0..3 {
            assert!(out[c * 64..(c + 1) * 64].iter().all(|&v| v == norm(77, c)));
        }
        // 16-bit gray goes through the generic conversion path (and a resize).
        let l16 = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(20, 10, Luma([77u16 * 257])));
        let out = preprocess(&encode(&l16, ImageFormat::Png), &p, &limits()).unwrap();
        for c in 0..3 {
            assert!(out[c * 64..(c + 1) * 64].iter().all(|&v| v == norm(77, c)));
        }
    }

    #[test]
    fn alpha_is_composited_over_the_mean_colour() {
        let p = prep(3, 1, ResizePolicy::Stretch);
        let bg = background(&p);
        assert_eq!(bg, [124, 116, 104]);
        // Opaque red, fully transparent (with garbage colour underneath), half-transparent white.
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(3, 1, |x, _| match x {
            0 => Rgba([255, 0, 0, 255]),
            1 => Rgba([0, 255, 0, 0]),
            _ => Rgba([255, 255, 255, 128]),
        }));
        let out = preprocess(&encode(&rgba, ImageFormat::Png), &p, &limits()).unwrap();
        assert_rgb(&out, &p, 0, 0, [255, 0, 0], 1e-3);
        assert_rgb(&out, &p, 1, 0, bg, 1e-3);
        for c in 0..3 {
            // Transparent means "no signal": within one 8-bit level of zero.
            assert!(out[c * 3 + 1].abs() * p.std[c] <= 0.5 / 255.0 + 1e-6);
        }
        let half = bg.map(|b| ((255.0 * 128.0 + b as f32 * 127.0) / 255.0).round() as u8);
        assert_rgb(&out, &p, 2, 0, half, 1e-3);

        // Gray + alpha also works and ends up in colour.
        let la = DynamicImage::ImageLumaA8(ImageBuffer::from_fn(3, 1, |x, _| {
            LumaA([200, if x == 1 { 0 } else { 255 }])
        }));
        let out = preprocess(&encode(&la, ImageFormat::Png), &p, &limits()).unwrap();
        assert_rgb(&out, &p, 0, 0, [200, 200, 200], 1e-3);
        assert_rgb(&out, &p, 1, 0, bg, 1e-3);
    }

    #[test]
    fn a_shorter_side_larger_than_the_input_crops_the_centre_of_the_scaled_image() {
        // Shorter side to 256, then the centre 224 (the authors' ImageNet preprocessing).
        let mut p = prep(224, 224, ResizePolicy::ShorterSideThenCenterCrop);
        p.shorter_side = Some(256);
        p.validate().unwrap();
        // At 256x256 nothing is resampled: the answer is the source's pixels 16..240.
        let src = ImageBuffer::from_fn(256, 256, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        let img = DynamicImage::ImageRgb8(src.clone());
        let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        for (x, y) in [(0, 0), (1, 0), (100, 57), (223, 223), (5, 200)] {
            assert_rgb(&out, &p, x, y, src.get_pixel(x + 16, y + 16).0, 1e-3);
        }
        // At 224x224 it is not the identity: the centre 196 px are scaled up to 224.
        let small = DynamicImage::ImageRgb8(ImageBuffer::from_fn(224, 224, |x, _| {
            if x < 112 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let out = preprocess(&encode(&small, ImageFormat::Png), &p, &limits()).unwrap();
        let whole = prep(224, 224, ResizePolicy::ShorterSideThenCenterCrop);
        let unscaled = preprocess(&encode(&small, ImageFormat::Png), &whole, &limits()).unwrap();
        assert_ne!(out, unscaled);
        assert_rgb(&out, &p, 0, 100, [255, 0, 0], 1e-3);
        assert_rgb(&out, &p, 223, 100, [0, 0, 255], 1e-3);
        // A landscape 384x256 source is already at the scaled size: columns 80..304, rows 16..240.
        let wide = ImageBuffer::from_fn(384, 256, |x, y| {
            Rgb([(x % 256) as u8, (y * 3 % 256) as u8, ((x * y) % 256) as u8])
        });
        let out = preprocess(
            &encode(&DynamicImage::ImageRgb8(wide.clone()), ImageFormat::Png),
            &p,
            &limits(),
        )
        .unwrap();
        for (x, y) in [(0, 0), (223, 223), (17, 150)] {
            assert_rgb(&out, &p, x, y, wide.get_pixel(x + 80, y + 16).0, 1e-3);
        }
    }

    #[test]
    fn a_shorter_side_is_checked_at_load() {
        let mut p = prep(224, 224, ResizePolicy::ShorterSideThenCenterCrop);
        p.shorter_side = Some(200);
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("resize_shorter_side 200"));
        let mut p = prep(224, 224, ResizePolicy::Stretch);
        p.shorter_side = Some(256);
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("needs resize"));
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        // 300x100: red | green | blue thirds. Shorter side is already 100, so the square crop
        // is exactly the middle third, with no resampling: pure green.
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(300, 100, |x, _| match x / 100 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        }));
        let p = prep(100, 100, ResizePolicy::ShorterSideThenCenterCrop);
        let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        for y in [0, 50, 99] {
            for x in [0, 1, 50, 98, 99] {
                assert_rgb(&out, &p, x, y, [0, 255, 0], 1e-3);
            }
        }

        // 200x100 red|blue halves to 50x50: scale to 100x50, keep columns 25..75, so the
        // boundary lands in the middle of the output.
        let p = prep(50, 50, ResizePolicy::ShorterSideThenCenterCrop);
        let img = DynamicImage::ImageRgb8(halves(200, 100));
        let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        for y in [0, 25, 49] {
            for x in 0..24 {
                assert_rgb(&out, &p, x, y, [255, 0, 0], 1e-3);
            }
            for x in 26..50 {
                assert_rgb(&out, &p, x, y, [0, 0, 255], 1e-3);
            }
        }

        // Tall image, non-square target: 60x240 with top half red, bottom blue, to 30x20.
        // Scale factor max(30/60, 20/240) = 0.5 -> 30x120, crop rows 50..70: straddles the
        // boundary at row 60 -> output rows 0..9 red, 10..19 blue.
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(60, 240, |_, y| {
            if y < 120 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let p = prep(30, 20, ResizePolicy::ShorterSideThenCenterCrop);
        let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        for x in [0, 15, 29] {
            for y in 0..9 {
                assert_rgb(&out, &p, x, y, [255, 0, 0], 1e-3);
            }
            for y in 11..20 {
                assert_rgb(&out, &p, x, y, [0, 0, 255], 1e-3);
            }
        }
    }

    #[test]
    fn stretch_keeps_everything() {
        let p = prep(50, 50, ResizePolicy::Stretch);
        let img = DynamicImage::ImageRgb8(halves(200, 100));
        let out = preprocess(&encode(&img, ImageFormat::Png), &p, &limits()).unwrap();
        for y in [0, 49] {
            for x in 0..24 {
                assert_rgb(&out, &p, x, y, [255, 0, 0], 1e-3);
            }
            for x in 26..50 {
                assert_rgb(&out, &p, x, y, [0, 0, 255], 1e-3);
            }
        }
    }

    /// Insert an EXIF APP1 segment with only an Orientation tag right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF header, IFD0 at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_honoured() {
        // 64x32, left half red, right half blue.
        let jpeg = encode(&DynamicImage::ImageRgb8(halves(64, 32)), ImageFormat::Jpeg);
        let tol = 40.0; // JPEG chroma subsampling smears saturated colours a bit

        // Orientation 6 = "rotate 90° clockwise to display": stored left becomes top.
        let rotated = with_exif_orientation(&jpeg, 6);
        assert_eq!(probe_dimensions(&rotated).unwrap(), (64, 32));
        let p = prep(32, 64, ResizePolicy::Stretch);
        let out = preprocess(&rotated, &p, &limits()).unwrap();
        for x in [2, 16, 29] {
            assert_rgb(&out, &p, x, 4, [255, 0, 0], tol);
            assert_rgb(&out, &p, x, 59, [0, 0, 255], tol);
        }

        // Orientation 3 = 180°: red on the right.
        let p = prep(64, 32, ResizePolicy::Stretch);
        let out = preprocess(&with_exif_orientation(&jpeg, 3), &p, &limits()).unwrap();
        assert_rgb(&out, &p, 60, 16, [255, 0, 0], tol);
        assert_rgb(&out, &p, 4, 16, [0, 0, 255], tol);

        // Orientation 1 = as stored.
        let out = preprocess(&with_exif_orientation(&jpeg, 1), &p, &limits()).unwrap();
        assert_rgb(&out, &p, 4, 16, [255, 0, 0], tol);
        assert_rgb(&out, &p, 60, 16, [0, 0, 255], tol);
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }

    /// A valid PNG whose IHDR claims `w x h` RGB8 but whose IDAT holds a single zero byte.
    fn bomb_png(w: u32, h: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, adaptive, no interlace
        png_chunk(&mut png, b"IHDR", &ihdr);
        // zlib stream: header, one final stored block holding [0], adler32([0]) = 0x00010001.
        let idat = [
            0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        png_chunk(&mut png, b"IDAT", &idat);
        png_chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn huge_header_is_rejected_before_decoding() {
        let png = bomb_png(20_000, 20_000);
        assert!(png.len() < 100);
        assert_eq!(probe_dimensions(&png).unwrap(), (20_000, 20_000));
        let p = prep(224, 224, ResizePolicy::ShorterSideThenCenterCrop);
        let start = Instant::now();
        let err = preprocess(&png, &p, &limits()).unwrap_err();
        // Decoding would allocate 1.2 GB and take seconds; rejecting reads ~60 bytes.
        assert!(
            start.elapsed().as_millis() < 100,
            "took {:?}",
            start.elapsed()
        );
        match err {
            ImageError::TooLarge {
                width: 20_000,
                height: 20_000,
                max_pixels: 40_000_000,
            } => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Just under the limit passes the header check and then fails as corrupt (the IDAT
        // is far too short), without a panic.
        let ok_dims = bomb_png(1000, 1000);
        assert!(matches!(
            preprocess(&ok_dims, &p, &limits()),
            Err(ImageError::Corrupt(_))
        ));
        // u32 overflow of width*height is not an escape route.
        let png = bomb_png(u32::MAX / 2, 3);
        assert!(preprocess(&png, &p, &limits()).is_err());
    }

    #[test]
    fn body_limit_is_enforced() {
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(16, 16)), ImageFormat::Png);
        let p = prep(8, 8, ResizePolicy::Stretch);
        let small = Limits {
            max_pixels: 1_000_000,
            max_bytes: bytes.len() - 1,
        };
        assert!(matches!(
            preprocess(&bytes, &p, &small),
            Err(ImageError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn empty_unknown_and_unsupported_inputs() {
        let p = prep(8, 8, ResizePolicy::Stretch);
        assert!(matches!(
            preprocess(&[], &p, &limits()),
            Err(ImageError::Empty)
        ));
        assert!(matches!(probe_dimensions(&[]), Err(ImageError::Empty)));
        assert!(matches!(
            preprocess(b"hello, world", &p, &limits()),
            Err(ImageError::UnsupportedFormat(_))
        ));
        assert!(matches!(
            preprocess(b"GIF89a\x01\x00\x01\x00", &p, &limits()),
            Err(ImageError::UnsupportedFormat(_))
        ));
        assert!(matches!(
            preprocess(b"\x89PNG\r\n\x1a\ngarbage", &p, &limits()),
            Err(ImageError::Corrupt(_))
        ));
        assert!(matches!(
            preprocess(&[0xFF, 0xD8, 0xFF], &p, &limits()),
            Err(ImageError::Corrupt(_))
        ));
    }

    #[test]
    fn bad_config_is_rejected() {
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(16, 16)), ImageFormat::Png);
        let mut p = prep(8, 8, ResizePolicy::Stretch);
        p.channels = 1;
        assert!(matches!(
            preprocess(&bytes, &p, &limits()),
            Err(ImageError::InvalidConfig(_))
        ));
        let mut p = prep(0, 8, ResizePolicy::Stretch);
        assert!(p.validate().is_err());
        p = prep(8, 8, ResizePolicy::Stretch);
        p.std[1] = 0.0;
        assert!(p.validate().is_err());
    }

    #[test]
    fn truncated_inputs_are_errors() {
        let img = DynamicImage::ImageRgb8(gradient(64, 48));
        let p = prep(16, 16, ResizePolicy::ShorterSideThenCenterCrop);
        for format in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ] {
            let bytes = encode(&img, format);
            // Cut inside the pixel data: must be an error, never a gray-filled image.
            for keep in [bytes.len() / 2, bytes.len() * 3 / 4, bytes.len() - 40] {
                assert!(
                    preprocess(&bytes[..keep], &p, &limits()).is_err(),
                    "{format:?} truncated to {keep}/{} decoded",
                    bytes.len()
                );
            }
            // Every other cut point: an error or (for cuts after the pixel data, e.g. a missing
            // PNG IEND) a result, but never a panic.
            for keep in 0..bytes.len() {
                let _ = preprocess(&bytes[..keep], &p, &limits());
                let _ = probe_dimensions(&bytes[..keep]);
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let img = DynamicImage::ImageRgba8(ImageBuffer::from_fn(40, 30, |x, y| {
            Rgba([(x * 6) as u8, (y * 8) as u8, 50, 200])
        }));
        let p = prep(16, 16, ResizePolicy::ShorterSideThenCenterCrop);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            // xorshift64: deterministic, no rand dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for format in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ] {
            let bytes = encode(&img, format);
            for _ in 0..300 {
                let mut bad = bytes.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bad.len();
                    bad[i] = next() as u8;
                }
                let _ = preprocess(&bad, &p, &limits());
            }
        }
    }

    /// The direct zune-jpeg path gives exactly what `image`'s JPEG decoder (the same decoder,
    /// wrapped) gives: pixels, channel count and EXIF orientation.
    #[test]
    fn direct_jpeg_decode_matches_the_image_crate() {
        let rgb = DynamicImage::ImageRgb8(gradient(37, 23));
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_fn(31, 17, |x, y| {
            Luma([(x * 7 + y * 3) as u8])
        }));
        let mut cases = vec![
            encode(&rgb, ImageFormat::Jpeg),
            encode(&gray, ImageFormat::Jpeg),
        ];
        for orientation in [3, 6, 8] {
            cases.push(with_exif_orientation(&cases[0], orientation));
            cases.push(with_exif_orientation(&cases[1], orientation));
        }
        for bytes in &cases {
            let ours = decode_jpeg(bytes, &limits()).expect("direct");
            let mut decoder = ::image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes)).unwrap();
            let orientation = decoder.orientation().unwrap();
            let mut theirs = DynamicImage::from_decoder(decoder).unwrap();
            theirs.apply_orientation(orientation);
            assert_eq!(ours.color(), theirs.color());
            assert_eq!(
                (ours.width(), ours.height()),
                (theirs.width(), theirs.height())
            );
            assert_eq!(ours.as_bytes(), theirs.as_bytes());
        }
    }

    #[test]
    fn jpeg_frame_size_reads_the_header_or_gives_up() {
        let bytes = encode(
            &DynamicImage::ImageRgb8(gradient(300, 7)),
            ImageFormat::Jpeg,
        );
        assert_eq!(jpeg_frame_size(&bytes), Some((300, 7)));
        assert_eq!(probe_dimensions(&bytes).unwrap(), (300, 7));
        // Fill bytes before a marker are allowed.
        let mut filled = bytes[..2].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        filled.extend_from_slice(&bytes[2..]);
        assert_eq!(jpeg_frame_size(&filled), Some((300, 7)));
        // Cut anywhere before the frame header: no answer, and no panic.
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        for end in 0..sof + 9 {
            assert_eq!(jpeg_frame_size(&bytes[..end]), None, "cut at {end}");
        }
        // A scan before any frame header: give up, the decoder decides.
        assert_eq!(jpeg_frame_size(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // A zero-length segment cannot loop forever.
        assert_eq!(
            jpeg_frame_size(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0xFF, 0xC0]),
            None
        );
    }
}
