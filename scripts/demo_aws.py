#!/usr/bin/env python3
"""The AWS side of scripts/demo.sh, with boto3 against the local environment.

    demo_aws.py setup  STATE_JSON   create the SWF workflows and SSM executions that wait for
                                    the examples' signals; write their ids to STATE_JSON
    demo_aws.py step-execution-id STATE_JSON STEP
                                    print the id of the newest execution of STEP in the
                                    interactive execution (StopStep needs it)
    demo_aws.py evidence STATE_JSON what AWS recorded: SWF signal events, SSM executions,
                                    the emulator's counters; exit 1 if anything is off

Environment (from `signalman-env up --env-file`): AWS_ENDPOINT_URL (the emulator: SSM, and
SWF proxied to moto), SIGNALMAN_MOTO_URL (moto directly, for set-up), AWS_REGION.
"""
import json
import os
import sys
import urllib.request

import boto3

EMULATOR = os.environ["AWS_ENDPOINT_URL"]
MOTO = os.environ["SIGNALMAN_MOTO_URL"]
REGION = os.environ.get("AWS_REGION", "us-east-1")
OPERATOR = os.environ.get("AWS_ACCESS_KEY_ID", "signalman-operator")  # the operator's IAM user
SECRET = os.environ.get("AWS_SECRET_ACCESS_KEY", "not-a-secret")

DOMAIN = "orders"
WORKFLOW_TYPE = {"name": "OrderWorkflow", "version": "1"}
# workflowId -> region. The example for order-42 names region eu-west-1, so that workflow is
# started there (moto keeps one SWF per region, like AWS); the others run in the default one.
WORKFLOWS = {"order-41": REGION, "order-42": "eu-west-1", "order-43": REGION}


def client(service, endpoint, access_key="demo-admin", region=REGION):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=SECRET,
    )


def doc(description, steps, parameters=None):
    body = {"schemaVersion": "0.3", "description": description, "mainSteps": steps}
    if parameters:
        body["parameters"] = parameters
    return json.dumps(body)


# Inline runbooks whose step names match the examples.
DOCUMENTS = {
    "Demo-ReleaseApproval": doc(
        "Release 7: wait for an approval, then deploy",
        [
            {
                "name": "approve",
                "action": "aws:approve",
                "inputs": {
                    "Approvers": "{{ Approvers }}",
                    "MinRequiredApprovals": 1,
                    "Message": "Approve release 7?",
                },
            },
            {"name": "deploy", "action": "aws:executeScript",
             "inputs": {"Runtime": "python3.11", "Handler": "h", "Script": "def h(e, c): pass"}},
        ],
        {"Approvers": {"type": "StringList"}},
    ),
    "Demo-Maintenance": doc(
        "Pause until the maintenance window is over, then restart",
        [
            {"name": "drain", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
            {"name": "waitForMaintenance", "action": "aws:pause", "inputs": {}},
            {"name": "restart", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
        ],
    ),
    "Demo-InteractiveDeploy": doc(
        "Interactive: an operator starts each step",
        [
            {"name": "prepare", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
            # aws:sleep of an hour or more keeps running until StopStep (see the emulator README)
            {"name": "deploy", "action": "aws:sleep", "inputs": {"Duration": "PT24H"}},
            {"name": "verify", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
        ],
    ),
}


def setup(state_path):
    state = {"swf": {}, "ssm": {}}

    # --- SWF, through moto directly (set-up must not meet the emulator's faults)
    for region in sorted(set(WORKFLOWS.values())):
        swf = client("swf", MOTO, region=region)
        try:
            swf.register_domain(name=DOMAIN, workflowExecutionRetentionPeriodInDays="1")
        except swf.exceptions.DomainAlreadyExistsFault:
            pass
        try:
            swf.register_workflow_type(
                domain=DOMAIN,
                **WORKFLOW_TYPE,
                defaultTaskList={"name": "orders"},
                defaultExecutionStartToCloseTimeout="86400",
                defaultTaskStartToCloseTimeout="300",
                defaultChildPolicy="TERMINATE",
            )
        except swf.exceptions.TypeAlreadyExistsFault:
            pass
    for wid, region in WORKFLOWS.items():
        swf = client("swf", MOTO, region=region)
        run = swf.start_workflow_execution(domain=DOMAIN, workflowId=wid, workflowType=WORKFLOW_TYPE)
        state["swf"][wid] = {"runId": run["runId"], "region": region}

    # --- SSM, at the emulator
    admin = client("ssm", EMULATOR)
    for name, content in DOCUMENTS.items():
        try:
            admin.create_document(Name=name, Content=content, DocumentType="Automation",
                                  DocumentFormat="JSON")
        except admin.exceptions.DocumentAlreadyExists:
            pass
    approvers = [OPERATOR, "jane"]
    start = admin.start_automation_execution
    ssm = state["ssm"]
    ssm["approve"] = start(DocumentName="Demo-ReleaseApproval",
                           Parameters={"Approvers": approvers})["AutomationExecutionId"]
    ssm["reject"] = start(DocumentName="Demo-ReleaseApproval",
                          Parameters={"Approvers": approvers})["AutomationExecutionId"]
    ssm["resume"] = start(DocumentName="Demo-Maintenance")["AutomationExecutionId"]
    ssm["startstep"] = start(DocumentName="Demo-InteractiveDeploy",
                             Mode="Interactive")["AutomationExecutionId"]
    # Interactive mode: run the first step by hand so the execution waits before `deploy`.
    admin.send_automation_signal(AutomationExecutionId=ssm["startstep"], SignalType="StartStep",
                                 Payload={"StepName": ["prepare"]})
    ssm["stopstep"] = ssm["startstep"]  # StopStep stops the `deploy` that StartStep started
    # Just-in-time access: approved by the security lead (another principal), so that the
    # access window is open and there is something for the operator to revoke.
    ssm["revoke"] = start(DocumentName="Signalman-AccessRequest",
                          Parameters={"Approvers": ["security-lead"],
                                      "Message": ["Break-glass access to db-1"],
                                      "AccessDuration": ["PT8H"]})["AutomationExecutionId"]
    client("ssm", EMULATOR, access_key="security-lead").send_automation_signal(
        AutomationExecutionId=ssm["revoke"], SignalType="Approve",
        Payload={"Comment": ["granted for incident 4711"]})

    # The demo counts the operator's signals only.
    post(f"{EMULATOR}/_emu/reset")
    with open(state_path, "w") as f:
        json.dump(state, f, indent=2)

    print(f"SWF domain {DOMAIN!r}, workflow type {WORKFLOW_TYPE['name']} v{WORKFLOW_TYPE['version']}:")
    for wid, s in state["swf"].items():
        print(f"  {wid:9} open run {s['runId']}  ({s['region']})")
    print("SSM Automation executions (emulator):")
    for role, eid in ssm.items():
        e = admin.get_automation_execution(AutomationExecutionId=eid)["AutomationExecution"]
        if e.get("CurrentStepName"):
            where = f"at step {e['CurrentStepName']}"
        else:
            done = [s["StepName"] for s in e["StepExecutions"] if s["StepStatus"] == "Success"]
            where = f"between steps (done: {', '.join(done) or 'none'})"
        print(f"  for {role:9} {eid}  {e['DocumentName']:24} {e['Mode']:11} "
              f"{e['AutomationExecutionStatus']:10} {where}")


def post(url):
    urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b"")).read()


def get_json(url):
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def step_execution_id(state_path, step):
    state = json.load(open(state_path))
    ssm = client("ssm", EMULATOR)
    e = ssm.get_automation_execution(AutomationExecutionId=state["ssm"]["startstep"])
    ids = [s["StepExecutionId"] for s in e["AutomationExecution"]["StepExecutions"]
           if s["StepName"] == step and s.get("StepExecutionId")]
    if not ids:
        sys.exit(f"no execution of step {step!r} yet")
    print(ids[-1])


def evidence(state_path):
    state = json.load(open(state_path))
    ok = True

    def check(cond, what):
        nonlocal ok
        print(f"    {'ok  ' if cond else 'FAIL'} {what}")
        ok = ok and cond

    print("SWF (GetWorkflowExecutionHistory, WorkflowExecutionSignaled events):")
    for wid, s in state["swf"].items():
        swf = client("swf", MOTO, region=s["region"])
        events = swf.get_workflow_execution_history(
            domain=DOMAIN, execution={"workflowId": wid, "runId": s["runId"]})["events"]
        signaled = [e["workflowExecutionSignaledEventAttributes"] for e in events
                    if e["eventType"] == "WorkflowExecutionSignaled"]
        print(f"  {wid} ({s['region']}, run {s['runId'][:12]}…): {len(signaled)} signal(s)")
        for a in signaled:
            print(f"      signalName={a['signalName']!r} input={a['input']!r}" if a.get("input")
                  else f"      signalName={a['signalName']!r} (no input)")
        check(len(signaled) == 1, f"{wid}: exactly one WorkflowExecutionSignaled event")

    print("SSM Automation (GetAutomationExecution):")
    ssm = client("ssm", EMULATOR)
    seen = set()
    expect = {
        # role: (execution status, {step: expected status}, extra check)
        "approve": ("Success", {"approve": "Success", "deploy": "Success"}),
        "reject": ("Failed", {"approve": "Failed"}),
        "resume": ("Success", {"waitForMaintenance": "Success", "restart": "Success"}),
        "stopstep": ("Waiting", {"prepare": "Success", "deploy": "Cancelled"}),
        "revoke": ("Success", {"approve": "Success", "grantAccess": "Success",
                               "endAccess": "Success"}),
    }
    for role, eid in state["ssm"].items():
        if eid in seen:
            continue
        seen.add(eid)
        label = "startstep+stopstep" if role in ("startstep", "stopstep") else role
        e = ssm.get_automation_execution(AutomationExecutionId=eid)["AutomationExecution"]
        print(f"  {label}: {eid} {e['DocumentName']} -> {e['AutomationExecutionStatus']}")
        steps = {}
        for st in e["StepExecutions"]:
            steps[st["StepName"]] = st
            outs = {k: v for k, v in (st.get("Outputs") or {}).items()
                    if k in ("ApprovalStatus", "AccessStatus", "RevokedBy")}
            decisions = [json.loads(d) for d in (st.get("Outputs") or {}).get("ApproverDecisions", [])]
            line = f"      {st['StepName']:20} {st['Action']:18} {st['StepStatus']:10}"
            if outs:
                line += "  " + " ".join(f"{k}={v[0] if len(v) == 1 else v}" for k, v in outs.items())
            print(line.rstrip())
            for d in decisions:
                # AWS's published shape capitalises the keys (Approver, Decision, Comment).
                d = {k.lower(): v for k, v in d.items()}
                print(f"          decision: {d['decision']} by {d['approver'].split(':')[-1]}"
                      + (f" ({d['comment']!r})" if d.get("comment") else ""))
        status, want = expect["stopstep" if label.startswith("start") else role]
        check(e["AutomationExecutionStatus"] == status, f"execution {status}")
        for step, st in want.items():
            check(steps.get(step, {}).get("StepStatus") == st, f"step {step} {st}")
        if role == "approve":
            check(steps["approve"]["Outputs"]["ApprovalStatus"] == ["Approved"],
                  "ApprovalStatus Approved")
        if role == "reject":
            check(steps["approve"]["Outputs"]["ApprovalStatus"] == ["Rejected"],
                  "ApprovalStatus Rejected")
        if role == "revoke":
            check(steps["grantAccess"]["Outputs"].get("AccessStatus") == ["Revoked"],
                  "AccessStatus Revoked")

    print("Emulator counters (GET /_emu/counters; reset after set-up, so the operator's calls only):")
    c = get_json(f"{EMULATOR}/_emu/counters")

    def summary(svc):
        calls = ", ".join(f"{k}={v}" for k, v in sorted(c[svc]["calls"].items()))
        return (f"  {svc.upper()}: applied_signals={c[svc]['applied_signals']} "
                f"throttled={c[svc]['throttled']} faults={sum(c[svc]['faults'].values())}; calls: {calls}")

    print(summary("swf"))
    per_wf = {}
    for s in c["swf"]["signals"]:
        per_wf.setdefault(s["workflow_id"], []).append(s["signal_name"])
        print(f"      {s['domain']}/{s['workflow_id']:9} {s['signal_name']:9} "
              f"run {(s.get('run_id') or '-')[:12]}…  input: {'yes' if s['has_input'] else 'no'}")
    for wid in state["swf"]:
        check(len(per_wf.get(wid, [])) == 1, f"{wid}: exactly one applied SWF signal")
    print(summary("ssm"))
    per_ex = {}
    for s in c["ssm"]["signals"]:
        per_ex.setdefault(s["execution_id"], []).append(s["signal_type"])
        print(f"      {s['execution_id']} {s['signal_type']:9} by {s['principal'].split(':')[-1]}"
              + (f"  step {s['step_name']}" if s.get("step_name") else "")
              + (f" ({s['step_execution_id'][:8]}…)" if s.get("step_execution_id") else ""))
    for role, eid in state["ssm"].items():
        if role == "stopstep":
            continue
        want = ["StartStep", "StopStep"] if role == "startstep" else [role.capitalize()]
        what = "StartStep then StopStep" if role == "startstep" else f"exactly one {want[0]}"
        check(per_ex.get(eid) == want, f"{eid[:8]}…: {what}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "setup":
        setup(sys.argv[2])
    elif cmd == "step-execution-id":
        step_execution_id(sys.argv[2], sys.argv[3])
    elif cmd == "evidence":
        evidence(sys.argv[2])
    else:
        sys.exit(__doc__)
