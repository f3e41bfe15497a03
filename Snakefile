# MM-Lego pipeline. Run the demo with `snakemake --cores 2`; see README.md.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# The demo config is the default; a --configfile replaces it whole (Snakemake would otherwise
# deep-merge the two, leaking the demo's modalities into the user's cohort).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/cohort.smk"
include: "rules/slides.smk"
include: "rules/modalities.smk"
include: "rules/models.smk"
include: "rules/evaluation.smk"


rule all:
    default_target: True
    input:
        all_targets(),


reprint_summary_when_cached(workflow, f"{OUT}/summary/metrics.tsv")  # Snakemake skips onsuccess then


onsuccess:
    cancel_rescheduling_timers()
    print_summary(f"{OUT}/summary/metrics.tsv")


onerror:
    cancel_rescheduling_timers()
    report_failed_jobs(log)
