# The two commands of the README:
#   make run   set up, build and start the workbench on the embedded demo
#   make test  set up, build and run the whole test suite (what CI runs)
BUILD ?= build
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release
NINJA_JOBS ?= 2

.PHONY: setup configure build run test bench clean format

setup:
	@bash scripts/setup

configure: setup
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null

build: configure
	@ninja -C $(BUILD) -j $(NINJA_JOBS)

run: build
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then \
	  echo "no display: starting the workbench under xvfb-run (use --screenshot FILE to save a picture)"; \
	  xvfb-run -a -s "-screen 0 1280x800x24" $(BUILD)/app/lorq-workbench $(ARGS); \
	else \
	  $(BUILD)/app/lorq-workbench $(ARGS); \
	fi

test: build
	@cd $(BUILD) && ctest --output-on-failure

bench: build
	@$(BUILD)/bench/bench_forward

format:
	@clang-format -i -style=file $$(git ls-files '*.cpp' '*.h')

clean:
	@rm -rf $(BUILD)
