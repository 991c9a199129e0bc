/* Fuzz target: the model image reader. Any input either opens (and then every tensor and
 * blob it reports lies inside the input) or fails with FI_EFORMAT; it never crashes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The reader needs the 8-byte alignment mmap gives; fuzzers pass any pointer. */
	uint8_t *buf = malloc(size ? size : 1);
	struct fi_image *im;
	volatile uint8_t sink = 0;
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (fi_image_parse(buf, size, &im) == FI_OK) {
		for (int i = 0; i < im->set.n; i++) {
			const struct fi_tensor *t = &im->set.t[i];
			const uint8_t *p = t->data;
			if (p < buf || p + t->nbytes > buf + size)
				abort();
			if (t->nbytes)
				sink ^= p[0] ^ p[t->nbytes - 1];
		}
		for (int i = 0; i < im->n_blobs; i++) {
			const uint8_t *p = im->blobs[i].data;
			if (p < buf || p + im->blobs[i].size >= buf + size || p[im->blobs[i].size])
				abort();
		}
		fi_image_verify(im);
		fi_image_close(im);
	}
	(void)sink;
	free(buf);
	return 0;
}
