/* Writes the image seeds of tests/fuzz/corpus/image: a small gradient as
   JPEG (turbojpeg) and lossy + lossless WebP (libwebp). PNG seeds are written
   by make_seeds.py. Build: cc make_image_seeds.c -lturbojpeg -lwebp */
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>
#include <webp/encode.h>

static void put(const char* path, const unsigned char* data, unsigned long n) {
  FILE* f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) exit(1);
  fclose(f);
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : ".";
  enum { W = 12, H = 9 };
  unsigned char rgb[W * H * 3];
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      unsigned char* p = rgb + (y * W + x) * 3;
      p[0] = (unsigned char)(x * 20), p[1] = (unsigned char)(y * 28), p[2] = (unsigned char)((x + y) * 12);
    }
  char path[512];
  tjhandle tj = tjInitCompress();
  unsigned char* jpg = NULL;
  unsigned long n = 0;
  const int subsamp[] = {TJSAMP_444, TJSAMP_420, TJSAMP_GRAY};
  for (int i = 0; i < 3; ++i) {
    if (tjCompress2(tj, rgb, W, 0, H, TJPF_RGB, &jpg, &n, subsamp[i], 80, 0) != 0) return 1;
    snprintf(path, sizeof path, "%s/seed%d.jpg", dir, i);
    put(path, jpg, n);
  }
  tjFree(jpg);
  tjDestroy(tj);
  uint8_t* webp = NULL;
  size_t m = WebPEncodeRGB(rgb, W, H, W * 3, 75, &webp);
  snprintf(path, sizeof path, "%s/lossy.webp", dir);
  put(path, webp, m);
  WebPFree(webp);
  m = WebPEncodeLosslessRGB(rgb, W, H, W * 3, &webp);
  snprintf(path, sizeof path, "%s/lossless.webp", dir);
  put(path, webp, m);
  WebPFree(webp);
  return 0;
}
