RESEARCH_QUESTIONS = ("rq1", "rq2", "rq3", "rq4")


rule report:
    input:
        rules.aggregate.output.table,
    output:
        **{
            rq: report(
                f"{R}/reports/{rq}.md", caption=f"../report/{rq}.rst", category="Research questions"
            )
            for rq in RESEARCH_QUESTIONS
        },
        **{
            f"{rq}_figure": report(
                f"{R}/reports/{rq}.png", caption=f"../report/{rq}_figure.rst", category="Figures"
            )
            for rq in RESEARCH_QUESTIONS
        },
    script:
        "../scripts/report.py"
