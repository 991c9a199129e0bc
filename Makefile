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
# The version is fi.h's (FI_VERSION_MAJOR, _MINOR, _PATCH); libfi.so's SONAME carries the
# major number.
fi_ver = $(shell sed -n 's/^\#define FI_VERSION_$(1) \([0-9]*\).*/\1/p' include/fi/fi.h)
MAJOR   := $(call fi_ver,MAJOR)
VERSION := $(MAJOR).$(call fi_ver,MINOR).$(call fi_ver,PATCH)

ifeq ($(origin FI_CUDA),undefined)
  FI_CUDA := $(if $(NVCC),1,0)
endif

PKGS    := jansson msgpack libzmq libpcre2-8 libutf8proc openblas libcrypto libxxhash libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation
# clang (make fuzz) does not know gcc's -Wformat-truncation
WARN    += $(if $(findstring clang,$(CC)),-Wno-unknown-warning-option)
ALL_CFLAGS := -std=gnu11 $(WARN) -fPIC -pthread -Ilib -Iinclude $(PKG_CFLAGS) $(CFLAGS) -MMD -MP \
              -DFI_VERSION='"$(VERSION)"'
LDLIBS  := $(PKG_LIBS) -lpthread -lm
NVFLAGS := -O3 -std=c++17 $(CUARCH) -Xcompiler -fPIC -Ilib -Iinclude -Ikernels -MMD -MP \
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
  CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lnccl -lcudart -lstdc++
  LDLIBS  += $(CUDA_LIBS)
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
# tests/tools/*.c: helper programs of the shell tests (build/tests/tools/NAME)
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOLS   := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%-replay)
MAN1    := $(wildcard man/man1/*.1)
MAN3    := $(wildcard man/man3/*.3)
MAN5    := $(wildcard man/man5/*.5)
MAN7    := $(wildcard man/man7/*.7)

.SECONDARY:
.PHONY: all demo check check-unit check-cli check-cli-asan check-fuzz check-asan fuzz gpu install clean bundle info
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

# libfi.so.VERSION with the SONAME libfi.so.MAJOR, and the two links to it.
$(BUILD)/libfi.so: $(LIB_OBJ)
	rm -f $@ $@.$(MAJOR)
	$(CC) -shared -Wl,-soname,libfi.so.$(MAJOR) -o $@.$(VERSION) $^ $(LDFLAGS) $(LDLIBS)
	ln -s libfi.so.$(VERSION) $@.$(MAJOR)
	ln -s libfi.so.$(VERSION) $@

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

# runs the commands built beside it
$(BUILD)/tests/test_worker_router: | $(BUILD)/bin/fi-decode

$(BUILD)/tests/gpu/%: $(BUILD)/obj/tests/gpu/%.o $(UNIT_HOBJ) $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(UNIT_HOBJ) $(BUILD)/libfi.a $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/tests/tools/%: $(BUILD)/obj/tests/tools/%.o $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $< $(BUILD)/libfi.a $(LDFLAGS) $(LDLIBS)

# Fuzz targets: a replay driver (tests/fuzz/replay.c) runs each over its corpus in `make check`;
# `make fuzz` builds real libFuzzer binaries with clang.
$(BUILD)/fuzz/%-replay: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay.o $(BUILD)/libfi.a
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# Undefined behaviour stops the fuzzer (-fno-sanitize-recover), so it is a finding with an
# input, not a line in the log that a campaign would count as clean.
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang FI_CUDA=0 \
	  CFLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
	  build-fuzz/libfi.a
	@mkdir -p build-fuzz/fuzz
	for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    -Ilib -Iinclude $(PKG_CFLAGS) $$f \
	    build-fuzz/libfi.a $(LDLIBS) -o build-fuzz/fuzz/$$n || exit 1; done
	@echo "fuzz: binaries in build-fuzz/fuzz/ (run: mkdir -p /tmp/NAME && build-fuzz/fuzz/NAME /tmp/NAME tests/fuzz/corpus/NAME; new inputs go to the first directory, the committed seeds stay as they are)"

# The pkg-config file names PREFIX, so it is written again by install. Libs.private holds
# what a static link of libfi.a needs (pkg-config --static): the libraries libfi calls
# (their own dependencies are theirs: Debian's libzmq.pc, taken recursively, names a file
# that does not link) and CUDA's when built with it. The public headers include none of
# theirs, so Cflags is the include folder alone.
PC_TEXT = 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: fi\nDescription: LLM inference engine library (libfi(3))\nVersion: %s\nLibs: -L$${libdir} -lfi\nLibs.private: %s\nCflags: -I$${includedir}\n'
PC_PRIVATE = $(strip $(PKG_LIBS) -lpthread -lm $(CUDA_LIBS))
$(BUILD)/fi.pc: Makefile include/fi/fi.h
	@mkdir -p $(@D)
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' '$(PC_PRIVATE)' > $@

# Everything, one suite after another, closing with one "check: N passed, N failed, N skipped".
check: all $(UNITS) $(FUZZ_REPLAY) $(TOOLS)
	@FI_CUDA=$(FI_CUDA) FI_TEST_SHARED=$(abspath ../shared) sh tests/check.sh $(BUILD)

check-unit: $(UNITS)
	@fail=0; for t in $(UNITS); do echo "== $$t"; \
	  FI_TEST_SHARED=$(abspath ../shared) $$t || fail=1; done; exit $$fail

check-fuzz: $(FUZZ_REPLAY)
	@fail=0; for t in $(FUZZ_REPLAY); do n=$$(basename $$t -replay); \
	  $$t tests/fuzz/corpus/$$n || fail=1; done; exit $$fail

check-cli: $(CMDS) $(TOOLS)
	@PATH=$(abspath $(BUILD)/bin):$$PATH FI_CUDA=$(FI_CUDA) FI_TEST_SHARED=$(abspath ../shared) BUILD=$(abspath $(BUILD)) \
	  sh tests/cli/run.sh

# The same unit and fuzz-replay suites under AddressSanitizer and UBSan, CPU-only, in
# $(BUILD)-asan, with LeakSanitizer on whatever the caller's ASAN_OPTIONS say; a report
# (leak or error) exits 86, which no test expects. Then the shell tests of the commands'
# error paths with the sanitized commands (ASAN_CLI_TESTS).
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:exitcode=86:abort_on_error=0 \
	    LSAN_OPTIONS=exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ASAN_CLI_TESTS := test_fi_tokenize_errors test_fi_load_errors test_home_trust \
		  test_kv_corruption test_arena_lock
check-asan:
	$(ASAN_ENV) $(MAKE) BUILD=$(BUILD)-asan FI_CUDA=0 \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" check-unit check-fuzz check-cli-asan

check-cli-asan: $(CMDS)
	@PATH=$(abspath $(BUILD)/bin):$$PATH FI_TEST_SHARED=$(abspath ../shared) BUILD=$(abspath $(BUILD)) \
	  FI_CLI_TESTS="$(ASAN_CLI_TESTS)" sh tests/cli/run.sh

gpu: $(GPUS)

# The README's first command: the whole toolchain on the embedded default model.
demo: all
	sh examples/demo.sh

# Only the public headers (include/fi) are installed; lib/'s are internal.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/fi \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3 \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(CMDS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libfi.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libfi.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libfi.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libfi.so.$(MAJOR)
	ln -sf libfi.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libfi.so
	install -m 644 include/fi/*.h $(DESTDIR)$(PREFIX)/include/fi/
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' '$(PC_PRIVATE)' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fi.pc
	$(if $(MAN1),install -m 644 $(MAN1) $(DESTDIR)$(PREFIX)/share/man/man1/)
	$(if $(MAN3),install -m 644 $(MAN3) $(DESTDIR)$(PREFIX)/share/man/man3/)
	$(if $(MAN5),install -m 644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/)
	$(if $(MAN7),install -m 644 $(MAN7) $(DESTDIR)$(PREFIX)/share/man/man7/)

# A relocatable tree for a machine without the -dev packages: binaries, GPU tests and the
# non-system shared libraries they load, with an env file that points LD_LIBRARY_PATH at them.
bundle: all gpu $(UNITS)
	sh tools/bundle.sh $(BUILD) $(BUILD)/bundle

clean:
	rm -rf $(BUILD) $(BUILD)-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
