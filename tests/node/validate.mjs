// Validates an AsyncAPI document (a file path, or stdin) with the official parser.
// Prints {"errors": [...], "warnings": [...]} and exits 1 when there is an error.
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const source = readFileSync(process.argv[2] ?? 0, "utf8");
const diagnostics = await new Parser().validate(source);
const describe = (d) => ({ code: d.code, message: d.message, path: d.path.join(".") });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(describe);
const warnings = diagnostics.filter((d) => d.severity !== DiagnosticSeverity.Error).map(describe);
process.stdout.write(JSON.stringify({ errors, warnings }) + "\n");
process.exit(errors.length ? 1 : 0);
