# fi: one non-recursive Makefile.
#
# Sources are found by wildcard, so adding a module means adding a file:
#   lib/**/*.c                 -> build/libfi.a (and libfi.so)
#   lib/**/cuda/*.c kernels/*.cu -> only when CUDA is enabled
#   cmd/fi-*.c                 -> build/bin/fi-*
#   tests/unit/test_*.c        -> build/tests/test_*   (Check; run by `make check`)
#   tests/gpu/*.c              -> build/tests/gpu/*    (built when CUDA is enabled; run on a GPU)
#   tests/fuzz/fuzz_*.c        -> build/fuzz/*          (corpus replay in `make check`,
#                                                       libFuzzer binaries with `make fuzz`)
#   tests/cli/*.sh             -> run by `make check` with build/bin on PATH
#
# CUDA parts build when nvcc is found (sm_90 plus PTX; CUARCH= overrides); FI_CUDA=0 forces a
# CPU-only build.

PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUARCH  ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
VERSION := 0.1.0

ifeq ($(origin FI_CUDA),undefined)
  FI_CUDA := $(if $(NVCC),1,0)
endif

PKGS    := jansson msgpack libzmq libpcre2-8 libutf8proc openblas libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation
# clang (make fuzz) does not know gcc's -Wformat-truncation
WARN    += $(if $(findstring clang,$(CC)),-Wno-unknown-warning-option)
ALL_CFLAGS := -std=gnu11 $(WARN) -fPIC -pthread -Ilib $(PKG_CFLAGS) $(CFLAGS) -MMD -MP \
              -DFI_VERSION='"$(VERSION)"'
LDLIBS  := $(PKG_LIBS) -lpthread -lm
NVFLAGS := -O3 -std=c++17 $(CUARCH) -Xcompiler -fPIC -Ilib -Ikernels -MMD -MP \
           --expt-relaxed-constexpr -Werror all-warnings

# Every .c under lib/ is in libfi; those under a cuda/ folder only when CUDA is enabled.
ALL_LIB_C := $(shell find lib -name '*.c' 2>/dev/null)
# (filter takes one % per pattern, so the folder is matched with findstring)
CUDA_LIB_C := $(foreach f,$(ALL_LIB_C),$(if $(findstring /cuda/,$(f)),$(f)))
LIB_SRC := $(sort $(filter-out $(CUDA_LIB_C),$(ALL_LIB_C)))
CU_SRC  :=
ifeq ($(FI_CUDA),1)
  ALL_CFLAGS += -DFI_HAVE_CUDA -I$(CUDA_HOME)/include
  LIB_SRC += $(sort $(CUDA_LIB_C))
  CU_SRC  := $(sort $(wildcard kernels/*.cu))
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
CMD_SRC := $(sort $(wildcard cmd/fi-*.c))
CMDS    := $(CMD_SRC:cmd/%.c=$(BUILD)/bin/%)
# cmd/*.c other than the commands: plumbing the commands share (options, messages), not libfi
CMD_COMMON := $(filter-out $(CMD_SRC),$(wildcard cmd/*.c))
CMD_COBJ := $(CMD_COMMON:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNITS   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_HOBJ := $(UNIT_HELPERS:%.c=$(BUILD)/obj/%.o)
GPU_SRC := $(if $(filter 1,$(FI_CUDA)),$(sort $(wildcard tests/gpu/*.c)))
GPUS    := $(GPU_SRC:tests/gpu/%.c=$(BUILD)/tests/gpu/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%-replay)
MAN1    := $(wildcard man/man1/*.1)
MAN5    := $(wildcard man/man5/*.5)
MAN7    := $(wildcard man/man7/*.7)

.SECONDARY:
.PHONY: all demo check check-unit check-cli check-fuzz check-asan fuzz gpu install clean bundle info
all: info $(BUILD)/libfi.a $(BUILD)/libfi.so $(CMDS) $(BUILD)/fi.pc

info:
	@if [ "$(FI_CUDA)" = 1 ]; then echo "fi: building with CUDA ($(NVCC))"; \
	 else echo "fi: building CPU-only (no nvcc found, or FI_CUDA=0)"; fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# The wgmma prefill attention needs sm_90a code (arch-specific, H100/H200 only); FI_WGMMA tells
# its host side the code is there. Without it the mma.sync kernel runs.
$(BUILD)/obj/kernels/attn_prefill_wgmma.o: NVFLAGS += -gencode arch=compute_90a,code=sm_90a -DFI_WGMMA

$(BUILD)/libfi.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libfi.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/bin/%: $(BUILD)/obj/cmd/%.o $(CMD_COBJ) $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(CMD_COBJ) $(BUILD)/libfi.a $(LDFLAGS) $(LDLIBS)

# cmd/bench/*.c: fi-bench's serving benchmark, linked into fi-bench only
BENCH_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard cmd/bench/*.c))
$(BUILD)/bin/fi-bench: $(BENCH_OBJ)
$(BUILD)/bin/fi-bench: CMD_COBJ += $(BENCH_OBJ)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(UNIT_HOBJ) $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(UNIT_HOBJ) $(BUILD)/libfi.a $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/tests/gpu/%: $(BUILD)/obj/tests/gpu/%.o $(UNIT_HOBJ) $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(UNIT_HOBJ) $(BUILD)/libfi.a $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS)

# Fuzz targets: a replay driver (tests/fuzz/replay.c) runs each over its corpus in `make check`;
# `make fuzz` builds real libFuzzer binaries with clang.
$(BUILD)/fuzz/%-replay: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay.o $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang FI_CUDA=0 \
	  CFLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" build-fuzz/libfi.a
	@mkdir -p build-fuzz/fuzz
	for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined -Ilib $(PKG_CFLAGS) $$f \
	    build-fuzz/libfi.a $(LDLIBS) -o build-fuzz/fuzz/$$n || exit 1; done
	@echo "fuzz: binaries in build-fuzz/fuzz/ (run: mkdir -p /tmp/NAME && build-fuzz/fuzz/NAME /tmp/NAME tests/fuzz/corpus/NAME; new inputs go to the first directory, the committed seeds stay as they are)"

# The pkg-config file names PREFIX, so it is written again by install.
PC_TEXT = 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: fi\nDescription: GPU LLM inference engine library\nVersion: %s\nRequires.private: %s\nLibs: -L$${libdir} -lfi\nCflags: -I$${includedir}/fi\n'
$(BUILD)/fi.pc: Makefile
	@mkdir -p $(@D)
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' '$(PKGS)' > $@

# Everything, one suite after another, closing with one "check: N passed, N failed, N skipped".
check: all $(UNITS) $(FUZZ_REPLAY)
	@FI_TEST_SHARED=$(abspath ../shared) sh tests/check.sh $(BUILD)

check-unit: $(UNITS)
	@fail=0; for t in $(UNITS); do echo "== $$t"; \
	  FI_TEST_SHARED=$(abspath ../shared) $$t || fail=1; done; exit $$fail

check-fuzz: $(FUZZ_REPLAY)
	@fail=0; for t in $(FUZZ_REPLAY); do n=$$(basename $$t -replay); \
	  $$t tests/fuzz/corpus/$$n || fail=1; done; exit $$fail

check-cli: $(CMDS)
	@PATH=$(abspath $(BUILD)/bin):$$PATH FI_TEST_SHARED=$(abspath ../shared) BUILD=$(abspath $(BUILD)) \
	  sh tests/cli/run.sh

# The same unit and fuzz-replay suites under AddressSanitizer and UBSan, CPU-only, in
# $(BUILD)-asan.
check-asan:
	$(MAKE) BUILD=$(BUILD)-asan FI_CUDA=0 CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" check-unit check-fuzz

gpu: $(GPUS)

# The README's first command: the whole toolchain on the embedded default model.
demo: all
	sh examples/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/fi \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(CMDS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libfi.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libfi.so $(DESTDIR)$(PREFIX)/lib/
	cd lib && for h in $$(find . -name '*.h'); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/fi/$$h || exit 1; done
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' '$(PKGS)' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fi.pc
	$(if $(MAN1),install -m 644 $(MAN1) $(DESTDIR)$(PREFIX)/share/man/man1/)
	$(if $(MAN5),install -m 644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/)
	$(if $(MAN7),install -m 644 $(MAN7) $(DESTDIR)$(PREFIX)/share/man/man7/)

# A relocatable tree for a machine without the -dev packages: binaries, GPU tests and the
# non-system shared libraries they load, with an env file that points LD_LIBRARY_PATH at them.
bundle: all gpu $(UNITS)
	sh tools/bundle.sh $(BUILD) $(BUILD)/bundle

clean:
	rm -rf $(BUILD) $(BUILD)-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
