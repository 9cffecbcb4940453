// Preprocessing that reproduces the Python side exactly: transformers' PIL backend
// (AutoImageProcessor.from_pretrained(..., backend="pil")) on a PIL image.
//
// Why not transformers.js's own image processor? In the browser its RawImage.resize() ignores
// `resample` and scales with a canvas drawImage (Skia bilinear without antialiasing, so a 4000 px photo
// shrunk to 385 px aliases), and its center_crop() draws from a fractional offset ((385 - 308) / 2 = 38.5,
// i.e. another bilinear resample, half a pixel off), where Python crops whole pixels at offset 38.
// Here: decode with createImageBitmap (EXIF orientation applied, ICC profile ignored, as PIL does),
// then Pillow's separable resampling (src/libImaging/Resample.c: same filters, same supports, same
// 22-bit fixed-point coefficients, horizontal pass then vertical pass, each rounded to 8 bits), then
// the integer centre crop, rescale and normalise of transformers' numpy image transforms.
// Everything is read from the checkpoint's preprocessor_config.json.

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit images
const ONE = 1 << PRECISION_BITS;

function sinc(x) {
  if (x === 0.0) return 1.0;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow's filters, keyed by PIL.Image.Resampling values (what `resample` holds in the config).
const FILTERS = {
  1: { support: 3.0, fn: (x) => (x >= -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0) }, // LANCZOS
  2: { support: 1.0, fn: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } }, // BILINEAR
  3: { // BICUBIC, a = -0.5
    support: 2.0,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  4: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) }, // BOX
  5: { // HAMMING
    support: 1.0,
    fn: (x) => {
      x = Math.abs(x);
      if (x === 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x *= Math.PI;
      return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
    },
  },
};
export const RESAMPLE_NAMES = { 0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming" };

// precompute_coeffs() + normalize_coeffs_8bpc()
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const pre = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * ss);
      pre[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? pre[x] / ww : pre[x];
      kk[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

// One separable pass over `lines` lines of an interleaved 3-channel uint8 image. `stride`/`step`
// address the resampled axis: for the horizontal pass consecutive pixels are 3 bytes apart, for the
// vertical pass a whole row apart.
function resamplePass(src, dst, { lines, outSize, lineStrideIn, lineStrideOut, stepIn, stepOut, offset, coeffs }) {
  const { ksize, bounds, kk } = coeffs;
  const half = 1 << (PRECISION_BITS - 1);
  for (let line = 0; line < lines; line++) {
    const baseIn = (line + offset) * lineStrideIn;
    const baseOut = line * lineStrideOut;
    for (let xx = 0; xx < outSize; xx++) {
      const xmin = bounds[2 * xx];
      const n = bounds[2 * xx + 1];
      const k0 = xx * ksize;
      let s0 = half, s1 = half, s2 = half;
      let p = baseIn + xmin * stepIn;
      for (let x = 0; x < n; x++, p += stepIn) {
        const k = kk[k0 + x];
        s0 += src[p] * k;
        s1 += src[p + 1] * k;
        s2 += src[p + 2] * k;
      }
      const q = baseOut + xx * stepOut;
      dst[q] = clip8(s0);
      dst[q + 1] = clip8(s1);
      dst[q + 2] = clip8(s2);
    }
  }
}

/** Pillow's Image.resize((width, height), resample) on an RGB image {data (RGB bytes), width, height}. */
export function pilResize(img, width, height, resample) {
  if (img.width === width && img.height === height) return img;
  if (resample === 0) { // NEAREST: Pillow's affine transform with nearest sampling
    const out = new Uint8Array(width * height * 3);
    const sx = img.width / width, sy = img.height / height;
    for (let y = 0; y < height; y++) {
      const yi = Math.min(img.height - 1, Math.trunc((y + 0.5) * sy));
      for (let x = 0; x < width; x++) {
        const xi = Math.min(img.width - 1, Math.trunc((x + 0.5) * sx));
        const p = (yi * img.width + xi) * 3, q = (y * width + x) * 3;
        out[q] = img.data[p]; out[q + 1] = img.data[p + 1]; out[q + 2] = img.data[p + 2];
      }
    }
    return { data: out, width, height };
  }
  const filter = FILTERS[resample];
  if (!filter) throw new Error(`resample=${resample} is not a PIL resampling filter`);
  let cur = img;
  const vert = coefficients(img.height, height, filter);
  if (width !== img.width) {
    // only the source rows the vertical pass reads
    const first = vert.bounds[0];
    const last = vert.bounds[2 * height - 2] + vert.bounds[2 * height - 1];
    const rows = height !== img.height ? last - first : img.height;
    const offset = height !== img.height ? first : 0;
    if (height !== img.height) for (let i = 0; i < height; i++) vert.bounds[2 * i] -= first;
    const tmp = new Uint8Array(width * rows * 3);
    resamplePass(img.data, tmp, {
      lines: rows, outSize: width, lineStrideIn: img.width * 3, lineStrideOut: width * 3,
      stepIn: 3, stepOut: 3, offset, coeffs: coefficients(img.width, width, filter),
    });
    cur = { data: tmp, width, height: rows };
  }
  if (height !== img.height) {
    const out = new Uint8Array(width * height * 3);
    resamplePass(cur.data, out, {
      lines: width, outSize: height, lineStrideIn: 3, lineStrideOut: 3,
      stepIn: width * 3, stepOut: width * 3, offset: 0, coeffs: vert,
    });
    cur = { data: out, width, height };
  }
  return cur;
}

/** Decode a Blob to RGB bytes as the Python app's loader does: EXIF orientation applied, ICC profile not
 * applied (PIL ignores it), transparent pixels on white (parkclf.images), first frame only. */
export async function decodeRGB(blob) {
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i]; data[j + 1] = rgba[i + 1]; data[j + 2] = rgba[i + 2];
  }
  return { data, width, height };
}

function sizeOf(size) {
  return typeof size === "number" ? { height: size, width: size } : size;
}

// transformers' get_resize_output_image_size(default_to_square=False) and the fixed height x width case
function resizeTarget(size, width, height) {
  if (size.height && size.width) return [size.width, size.height];
  if (size.shortest_edge && !size.longest_edge) {
    const short = Math.min(width, height), long = Math.max(width, height);
    const newShort = size.shortest_edge, newLong = Math.trunc((newShort * long) / short);
    return width <= height ? [newShort, newLong] : [newLong, newShort];
  }
  return null;
}

/** Whether preprocessRGB() implements this preprocessor_config.json (else the caller falls back). */
export function supports(pp) {
  const size = sizeOf(pp.size ?? {});
  const fixed = !!(size.height && size.width) || !!(size.shortest_edge && !size.longest_edge);
  return (pp.do_resize === false || fixed) && !pp.do_pad && !pp.do_thumbnail && !pp.do_crop_margin &&
    !pp.do_flip_channel_order && (pp.resample ?? 2) in RESAMPLE_NAMES;
}

/** RGB image -> Float32Array pixel_values (CHW) and its [3, H, W] shape, per preprocessor_config.json. */
export function preprocessRGB(img, pp) {
  const resample = pp.resample ?? 2; // transformers' PIL backend: BILINEAR when unset
  if (pp.do_resize ?? pp.size !== undefined) {
    const [w, h] = resizeTarget(sizeOf(pp.size), img.width, img.height);
    img = pilResize(img, w, h, resample);
  }
  let top = 0, left = 0, H = img.height, W = img.width;
  if (pp.do_center_crop && pp.crop_size) {
    const crop = sizeOf(pp.crop_size);
    H = crop.height; W = crop.width;
    top = Math.floor((img.height - H) / 2); // numpy center_crop: (h - crop) // 2, zeros outside the image
    left = Math.floor((img.width - W) / 2);
  }
  const doRescale = pp.do_rescale ?? true;
  const factor = pp.rescale_factor ?? 1 / 255;
  // float32 throughout, as numpy does it (image, mean and std all float32)
  const mean = (pp.do_normalize ? [].concat(pp.image_mean) : [0, 0, 0]).map(Math.fround);
  const std = (pp.do_normalize ? [].concat(pp.image_std) : [1, 1, 1]).map(Math.fround);
  while (mean.length < 3) mean.push(mean[0]);
  while (std.length < 3) std.push(std[0]);
  const out = new Float32Array(3 * H * W);
  const plane = H * W;
  for (let y = 0; y < H; y++) {
    const sy = y + top;
    for (let x = 0; x < W; x++) {
      const sx = x + left;
      const inside = sy >= 0 && sy < img.height && sx >= 0 && sx < img.width;
      const p = (sy * img.width + sx) * 3;
      for (let c = 0; c < 3; c++) {
        let v = inside ? img.data[p + c] : 0;
        if (doRescale) v = Math.fround(v * factor);
        out[c * plane + y * W + x] = Math.fround(v - mean[c]) / std[c];
      }
    }
  }
  return { data: out, dims: [3, H, W] };
}
