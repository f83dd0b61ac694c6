# The experiment graph of one experiment: every target is a file under $(OUT), so `make -j2`
# runs independent stages in parallel and a rerun redoes only what changed (a changed input file,
# a rebuilt tool, or a changed variable of that stage).
#
#   make -f scripts/experiment.mk EXP=main -j2            # one of the named experiments below
#   make -f scripts/experiment.mk EXP=mse W_CALIB=mse A_CALIB=mse OPTIONS=w2a8,w4a8,w8a8
#   make -f scripts/experiment.mk EXP=main LAUNCHER=slurm SHARDS=16 SLURM_CPUS=4  # perturb on Slurm
#
# The graph, for each metric M in $(METRICS) and psd method P in $(PSD_METHODS):
#
#   quantize calibrate ............................................ calib.json
#   perturb --metric M --se (quantizers from calib.json) ......... M/G.npy M/G.se.npy M/index.json
#     (zeroq alone on kl: the diagonal only, perturb --naive ....... kl-diag/G.npy ...)
#   psd --method P ................................................ M/G-P.npy M/psd-P.json
#   scripts/uniform.py, the pins of the method uniform ............ alloc/uniform/BUDGET.pins
#   allocate, one file per method and budget (and `none`) ......... alloc/METHOD/BUDGET.json
#   evaluate on the test set, one call per method (one FP pass) ... eval/METHOD.jsonl, eval/fp.jsonl
#   scripts/table.py .............................................. table.md table.csv sanity.md
#   clado-plot .................................................... plot.png plot.svg
#
# Methods, all allocated at the same budgets:
#   uniform            every layer the same option: the highest precision the budget allows
#   naive              loss G, diagonal only (allocate --naive; HAWQ-like knapsack)
#   zeroq              kl G, diagonal only (ZeroQ's sensitivity)
#   clado-M-P          the whole matrix of metric M after psd method P (shift keeps the exact
#                      minimiser of the indefinite G; clip changes the objective, as the seed did)
#   clado-loss-conf    the raw loss G with allocate --se G.se.npy --confidence $(CONFIDENCE) (default 2)
#   clado-loss-pess    the same with allocate --pessimistic (negative cross terms not trusted)
# The calibration samples (train split) and the evaluation images (test split) are disjoint, so
# the measured Δ of every allocation is held out.

# ---- Variables (all can be given on the command line) -----------------------------------------

EXP ?= main
# The model's short name (resnet20, mobilenetv2, or an ONNX file's name without .onnx).
MODEL_NAME = $(if $(WEIGHTS),$(ARCH)-$(basename $(notdir $(WEIGHTS))),$(basename $(notdir $(MODEL))))
OUT ?= out/$(MODEL_NAME)/$(EXP)

# The seed's variants and this project's main experiment: default options and budgets by name
# (FULL=1: the finer sweep). `general` (9 options) has the most expensive perturbation.
OPTIONS_main         := w2a8,w4a8,w8a8
BUDGETS_main         := 2.5 3 4 5 6
BUDGETS_FULL_main    := 2.25 2.5 2.75 3 3.5 4 4.5 5 5.5 6 7
OPTIONS_binary       := w4,fp
BUDGETS_binary       := 6 8 12 16
BUDGETS_FULL_binary  := 5 6 8 10 12 16 20 24
OPTIONS_multi        := w2,w4,w8
BUDGETS_multi        := 2.5 3 4 5 6
BUDGETS_FULL_multi   := 2.25 2.5 2.75 3 3.5 4 4.5 5 5.5 6 7
OPTIONS_general      := w{2,4,8}a{2,4,8}
BUDGETS_general      := 2.5 3 4 5 6
BUDGETS_FULL_general := 2.25 2.5 2.75 3 3.5 4 4.5 5 5.5 6 7

# Quantization options per layer (the option grammar of docs/definitions.md; brace expansion allowed).
OPTIONS ?= $(or $(OPTIONS_$(EXP)),w2a8,w4a8,w8a8)
# Budgets of kind BUDGET_KIND (an allocate flag: avg-bits, size-mb, size-bits or bops).
BUDGETS ?= $(or $(if $(FULL),$(BUDGETS_FULL_$(EXP))),$(BUDGETS_$(EXP)),3 4 5 6)
BUDGET_KIND ?= avg-bits
# Calibration (train split): samples, seed of their selection, range calibration of quantizers.
SAMPLES ?= 256
SEED ?= 0
W_CALIB ?= minmax
A_CALIB ?= minmax
# Test images evaluated (empty: all 10,000).
EVAL_SAMPLES ?=
# The model: MODEL=resnet20 (the built-in Fashion-MNIST ResNet-20), MODEL=mobilenetv2 (the
# built-in Fashion-MNIST MobileNetV2, models/fmnist-mobilenetv2.onnx) or the path of an ONNX
# file. A checkpoint of one of the CIFAR ResNets instead: WEIGHTS=FILE ARCH=resnet20|32|44|56.
MODEL ?= resnet20
ARCH ?= resnet20
WEIGHTS ?=
DATA ?= fashion-mnist:/usr/share/datasets/fashion-mnist
# Calibration draws: REPEATS=K runs every calibration-dependent stage once per draw (seeds
# 0..K-1 select different calibration images; draw k in $(OUT)/draw-k) and the report gives
# mean ± standard deviation over the draws and paired comparisons of the methods
# (scripts/repeats.py). Empty: one draw with seed SEED, in $(OUT) itself.
REPEATS ?=
# Which metrics and psd methods the CLADO methods use (PSD_METHOD/METRIC: one of each).
METRICS ?= $(or $(METRIC),loss kl)
PSD_METHODS ?= $(or $(PSD_METHOD),clip shift)
# The baselines (any of uniform naive zeroq).
BASELINES ?= uniform naive zeroq
# Z of `allocate --confidence` for the method clado-loss-conf: the raw loss G with the upper
# confidence bound of allocate --help, Noise (CONFIDENCE= leaves the method out).
CONFIDENCE ?= 2
CONFIDENCE_FLAGS ?= --confidence $(CONFIDENCE) --se $(OUT)/loss/G.se.npy
# The method clado-loss-pess adds allocate's model-error rule (allocate --help, Model error) to
# clado-loss-conf (PESSIMISTIC= leaves it out).
PESSIMISTIC ?= 1
# Extra flags: for every perturb run, for every allocate run (e.g. --pin conv1=w8a8,fc=w8a8).
PERTURB_FLAGS ?=
ALLOCATE_FLAGS ?=
TIME_LIMIT ?= 60
# Where perturb runs. LAUNCHER=local: here (make -j runs the metrics in parallel).
# LAUNCHER=slurm: each metric's perturbation is a Slurm job array of SHARDS tasks and its merge a
# job that depends on it (sbatch --dependency=afterok); make waits for the merge and the later
# stages run here as usual. The working directory and OUT must be on a filesystem that the nodes
# share. A shard that fails or is cancelled fails the stage, naming the shard and its log; running
# make again resubmits only the missing shards, which resume from their finished units.
# SLURM_PARTITION, SLURM_TIME (sbatch --time) and SLURM_CPUS (CPUs per task, also perturb's
# threads) pass through to every sbatch, and so do SBATCH_FLAGS (split at spaces).
LAUNCHER ?= local
SHARDS ?= 4
SLURM_PARTITION ?=
SLURM_TIME ?=
SLURM_CPUS ?=
SBATCH_FLAGS ?=
# Not for the environment of the jobs: srun reads SLURM_PARTITION.
unexport SLURM_PARTITION SLURM_TIME SLURM_CPUS SBATCH_FLAGS
$(if $(filter-out local slurm,$(LAUNCHER)),$(error LAUNCHER=$(LAUNCHER): expected local or slurm))
# The tools, the plot and the report.
BIN ?= target/release
PLOT ?= $(BIN)/clado-plot
PLOT_X ?= avg-bits
PYTHON ?= python3
SCRIPTS := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# ---- Derived ------------------------------------------------------------------------------------

CLADO_METHODS := $(foreach m,$(METRICS),$(foreach p,$(PSD_METHODS),clado-$(m)-$(p)))
CONFIDENT_METHODS := $(if $(CONFIDENCE),clado-loss-conf $(if $(PESSIMISTIC),clado-loss-pess))
METHODS := $(BASELINES) $(CLADO_METHODS) $(CONFIDENT_METHODS)
# Metrics that some method needs a matrix of.
# zeroq needs only the diagonal of the KL G: when no CLADO method uses the KL G, perturb measures
# only that (perturb --naive, a pass per layer and option) into kl-diag/.
ZEROQ_DIR := $(if $(filter kl,$(METRICS)),kl,kl-diag)
NEEDED_METRICS := $(sort $(METRICS) $(if $(filter uniform naive,$(BASELINES))$(CONFIDENCE),loss) \
                         $(if $(filter zeroq,$(BASELINES)),$(ZEROQ_DIR)))

# The built-in models by name, else an ONNX file.
MODEL_FILE_mobilenetv2 := $(SCRIPTS)/../models/fmnist-mobilenetv2.onnx
MODEL_FLAGS := $(strip $(if $(WEIGHTS),--arch $(ARCH) --weights $(WEIGHTS),\
  $(if $(filter resnet20,$(MODEL)),--arch resnet20,--model $(or $(MODEL_FILE_$(MODEL)),$(MODEL))))) --data $(DATA)
$(if $(or $(WEIGHTS),$(filter resnet20 mobilenetv2 %.onnx,$(MODEL))),,\
  $(error MODEL=$(MODEL): expected resnet20, mobilenetv2 or the path of an .onnx file))
QUIET := -q

# Every recipe runs under bash with errexit, nounset and pipefail: a failing command fails its
# stage, make stops with the stage named, and the stage's half-made target is deleted.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: all report plot clean-experiment
.DELETE_ON_ERROR:
.SECONDARY:

all: report plot

report: $(OUT)/table.md $(OUT)/table.csv $(if $(REPEATS),,$(OUT)/sanity.md)
plot: $(OUT)/plot.png $(OUT)/plot.svg

# ---- Stage variables: a stamp file per stage, rewritten only when its variables change --------
# Targets depend on their stage's stamp, so `make SAMPLES=512` redoes perturb and what follows,
# and `make TIME_LIMIT=10` only the allocations and what follows.

$(shell mkdir -p $(OUT))
$(if $(filter 0,$(.SHELLSTATUS)),,$(error cannot create OUT=$(OUT)))
# $(call differ,A,B): non-empty when the strings A and B differ.
differ = $(or $(subst x$(1),,x$(2)),$(subst x$(2),,x$(1)))
# $(call stamp,NAME,TEXT): write `NAME: TEXT` to $(OUT)/.NAME.vars unless it holds it already.
stamp = $(if $(call differ,$(file <$(OUT)/.$(1).vars),$(1): $(strip $(2))),$(file >$(OUT)/.$(1).vars,$(1): $(strip $(2))))

$(call stamp,calib,$(MODEL_FLAGS) $(OPTIONS) $(SAMPLES) $(SEED) $(W_CALIB) $(A_CALIB))
$(call stamp,perturb,$(PERTURB_FLAGS))
$(call stamp,launcher,$(LAUNCHER) $(if $(filter slurm,$(LAUNCHER)),$(SHARDS)))
$(call stamp,allocate,$(BUDGET_KIND) $(TIME_LIMIT) $(ALLOCATE_FLAGS) $(if $(CONFIDENCE),$(CONFIDENCE_FLAGS)))
$(call stamp,evaluate,$(EVAL_SAMPLES) $(BUDGETS))
$(call stamp,report,$(EXP) $(METHODS) $(PLOT_X) $(REPEATS))

# ---- calibrate ---------------------------------------------------------------------------------

$(OUT)/calib.json: $(OUT)/.calib.vars $(BIN)/quantize
	$(BIN)/quantize calibrate $(MODEL_FLAGS) --samples $(SAMPLES) --seed $(SEED) --options '$(OPTIONS)' \
	  --w-calib $(W_CALIB) --a-calib $(A_CALIB) -o $@ $(QUIET)

# ---- perturb: G, its standard errors and index.json, per metric ---------------------------------
# Finished work units are kept in M/work while perturb runs (rerun after an interruption and it
# continues); the directory is dropped when the stage's variables or the launcher change, and when
# the run finishes. With LAUNCHER=slurm, scripts/slurm-perturb.sh submits the shards and the merge
# and waits for them; M/work holds each shard's result, finished units and Slurm log.

PERTURB = $(BIN)/perturb $(MODEL_FLAGS) --samples $(SAMPLES) --seed $(SEED) --calib $(OUT)/calib.json \
  --options '$(OPTIONS)' --metric $(patsubst %-diag,%,$*) $(if $(filter %-diag,$*),--naive) $(PERTURB_FLAGS) $(QUIET)
WORK_VARS := $(OUT)/.calib.vars $(OUT)/.perturb.vars $(OUT)/.launcher.vars
SBATCH := $(if $(SLURM_PARTITION),--partition=$(SLURM_PARTITION)) $(if $(SLURM_TIME),--time=$(SLURM_TIME)) \
  $(if $(SLURM_CPUS),--cpus-per-task=$(SLURM_CPUS)) $(SBATCH_FLAGS)

$(OUT)/%/G.npy $(OUT)/%/G.se.npy $(OUT)/%/index.json: $(OUT)/calib.json $(OUT)/.calib.vars $(OUT)/.perturb.vars $(BIN)/perturb
	@mkdir -p $(@D)
	@# cmp: 0 when M/work was made for these variables; 1 (differ) or 2 (no work.vars) when not.
	@if ! cat $(WORK_VARS) | cmp -s - $(@D)/work.vars; then \
	  rm -rf $(@D)/work; cat $(WORK_VARS) > $(@D)/work.vars; fi
ifeq ($(LAUNCHER),slurm)
	bash $(SCRIPTS)/slurm-perturb.sh $(@D) $(SHARDS) $(SBATCH) -- $(PERTURB)
else
	$(PERTURB) -o $(@D)/G.npy --se $(@D)/G.se.npy --index $(@D)/index.json --resume $(@D)/work
endif
	@rm -rf $(@D)/work $(@D)/work.vars

# ---- psd ----------------------------------------------------------------------------------------

$(OUT)/%/G-clip.npy $(OUT)/%/psd-clip.json: $(OUT)/%/G.npy $(OUT)/%/index.json $(BIN)/psd
	$(BIN)/psd --method clip --index $(@D)/index.json --report $(@D)/psd-clip.json $< -o $(@D)/G-clip.npy $(QUIET)
$(OUT)/%/G-shift.npy $(OUT)/%/psd-shift.json: $(OUT)/%/G.npy $(OUT)/%/index.json $(BIN)/psd
	$(BIN)/psd --method shift --index $(@D)/index.json --report $(@D)/psd-shift.json $< -o $(@D)/G-shift.npy $(QUIET)
$(OUT)/%/G-none.npy $(OUT)/%/psd-none.json: $(OUT)/%/G.npy $(OUT)/%/index.json $(BIN)/psd
	$(BIN)/psd --method none --index $(@D)/index.json --report $(@D)/psd-none.json $< -o $(@D)/G-none.npy $(QUIET)

# ---- allocate: one rule per method; BUDGET.json for each budget, none.json without a budget ----
# $(call method,NAME,METRIC,MATRIX,ALLOCATE FLAGS)
define method
$(OUT)/alloc/$(1)/%.json: $(3) $(dir $(3))index.json $(OUT)/.allocate.vars $(BIN)/allocate
	@mkdir -p $$(@D)
	$(BIN)/allocate --matrix $(3) --index $(dir $(3))index.json \
	  $$(if $$(filter none,$$*),,--$(BUDGET_KIND) $$*) $(4) --time-limit $(TIME_LIMIT) $(ALLOCATE_FLAGS) -o $$@ $(QUIET)
METHOD_METRIC_$(1) := $(2)
METHOD_MATRIX_$(1) := $(3)
endef

$(eval $(call method,naive,loss,$(OUT)/loss/G.npy,--naive))
$(eval $(call method,zeroq,kl,$(OUT)/$(ZEROQ_DIR)/G.npy,--naive))
$(foreach m,$(METRICS),$(foreach p,$(PSD_METHODS),\
  $(eval $(call method,clado-$(m)-$(p),$(m),$(OUT)/$(m)/G-$(p).npy,))))
$(eval $(call method,clado-loss-conf,loss,$(OUT)/loss/G.npy,$(CONFIDENCE_FLAGS)))
$(eval $(call method,clado-loss-pess,loss,$(OUT)/loss/G.npy,$(CONFIDENCE_FLAGS) --pessimistic))

# uniform: every layer pinned to the highest-precision option the budget allows (its predicted Δ
# comes from the loss G). The pins are a stage of their own, so that a failure of uniform.py fails
# the graph instead of leaving an unpinned allocation under the name `uniform`.
$(OUT)/alloc/uniform/%.pins: $(OUT)/loss/index.json $(OUT)/.allocate.vars $(SCRIPTS)/uniform.py
	@mkdir -p $(@D)
	$(PYTHON) $(SCRIPTS)/uniform.py $< --$(BUDGET_KIND) $* > $@
$(OUT)/alloc/uniform/%.json: $(OUT)/loss/G.npy $(OUT)/loss/index.json $(OUT)/alloc/uniform/%.pins $(OUT)/.allocate.vars $(BIN)/allocate
	$(BIN)/allocate --matrix $< --index $(OUT)/loss/index.json --$(BUDGET_KIND) $* \
	  $(file <$(OUT)/alloc/uniform/$*.pins) -o $@ $(QUIET)
METHOD_METRIC_uniform := loss
METHOD_MATRIX_uniform := $(OUT)/loss/G.npy

# ---- evaluate: one call per method over all its budgets (they share one FP pass) ----------------

EVALUATE := $(BIN)/evaluate $(MODEL_FLAGS) --calib $(OUT)/calib.json $(if $(EVAL_SAMPLES),--samples $(EVAL_SAMPLES)) $(QUIET)

$(OUT)/eval/fp.jsonl: $(OUT)/calib.json $(OUT)/.evaluate.vars $(BIN)/evaluate
	@mkdir -p $(@D)
	$(EVALUATE) --fp > $@.tmp && mv $@.tmp $@

# $(call evaluation,METHOD)
define evaluation
$(OUT)/eval/$(1).jsonl: $(foreach b,$(BUDGETS),$(OUT)/alloc/$(1)/$(b).json) $(OUT)/calib.json $(OUT)/.evaluate.vars $(BIN)/evaluate
	@mkdir -p $$(@D)
	$(EVALUATE) $(foreach b,$(BUDGETS),--alloc $(OUT)/alloc/$(1)/$(b).json) > $$@.tmp && mv $$@.tmp $$@
endef
$(foreach m,$(METHODS),$(eval $(call evaluation,$(m))))

# ---- report and plot -----------------------------------------------------------------------------

# --method NAME=METRIC[:PSD REPORT] for each method; the report's offset (shift) is removed from
# the predicted Δ so that every prediction is on the scale of the metric.
psd_report = $(if $(filter clado-%,$(1)),$(if $(filter-out $(CONFIDENT_METHODS),$(1)),:$(dir $(METHOD_MATRIX_$(1)))psd-$(lastword $(subst -, ,$(1))).json))
REPORT_INPUTS := $(OUT)/eval/fp.jsonl $(foreach m,$(METHODS),$(OUT)/eval/$(m).jsonl) \
  $(foreach m,$(filter-out uniform,$(METHODS)),$(OUT)/alloc/$(m)/none.json) \
  $(foreach m,$(METHODS),$(if $(call psd_report,$(m)),$(patsubst :%,%,$(call psd_report,$(m))))) \
  $(foreach m,$(NEEDED_METRICS),$(OUT)/$(m)/index.json)

ifeq ($(REPEATS),)
$(OUT)/table.md $(OUT)/table.csv $(OUT)/sanity.md &: $(REPORT_INPUTS) $(OUT)/.report.vars $(SCRIPTS)/table.py
	$(PYTHON) $(SCRIPTS)/table.py --out $(OUT) --experiment '$(EXP)' --options '$(OPTIONS)' \
	  --budget-kind $(BUDGET_KIND) \
	  $(foreach m,$(METHODS),--method $(m)=$(METHOD_METRIC_$(m))$(call psd_report,$(m)))

else
# REPEATS=K: each draw is this graph again (its own make, OUT=$(OUT)/draw-k SEED=k, sharing the
# job slots), then scripts/repeats.py over the draws' tables. Each draw's make is asked every
# time (FORCE) and redoes only what changed in it.
$(if $(shell [ "$(REPEATS)" -ge 1 ] 2>/dev/null && echo ok),,$(error REPEATS=$(REPEATS): expected a positive number of draws))
DRAWS := $(shell seq 0 $$(($(REPEATS) - 1)))
comma := ,
space := $(subst x,,x x)
SELF := $(firstword $(MAKEFILE_LIST))
.PHONY: FORCE
FORCE:
$(OUT)/draw-%/table.csv: FORCE
	@$(MAKE) --no-print-directory -f $(SELF) OUT=$(OUT)/draw-$* SEED=$* REPEATS= report
$(OUT)/table.md $(OUT)/table.csv &: $(foreach k,$(DRAWS),$(OUT)/draw-$(k)/table.csv) $(OUT)/.report.vars $(SCRIPTS)/repeats.py
	$(PYTHON) $(SCRIPTS)/repeats.py --out $(OUT) --experiment '$(EXP)' --model '$(MODEL_NAME)' --options '$(OPTIONS)' \
	  --budget-kind $(BUDGET_KIND) --seeds '$(subst $(space),$(comma),$(strip $(DRAWS)))' $(foreach k,$(DRAWS),$(OUT)/draw-$(k))
endif

$(OUT)/plot.png $(OUT)/plot.svg &: $(OUT)/table.csv $(OUT)/.report.vars $(PLOT)
	$(PLOT) $< --png $(OUT)/plot.png --svg $(OUT)/plot.svg --x $(PLOT_X) \
	  --title '$(EXP): test top-1 against size ($(MODEL_NAME), options $(OPTIONS)$(if $(REPEATS),; mean of $(REPEATS) draws))'

clean-experiment:
	rm -rf $(OUT)
