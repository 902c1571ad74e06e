// Jest's global setup: one line per suite that will be skipped for lack of a program outside npm.
import { EXTERNAL_TOOLS, IS_ROOT, isRequired, missingCommands, ROOT_SKIP_LINE, skipReason, type ToolName } from './tools';

export default function globalSetup(): void {
  if (!IS_ROOT) process.stderr.write(`\nprefork tests: ${ROOT_SKIP_LINE}\n`);
  for (const name of Object.keys(EXTERNAL_TOOLS) as ToolName[]) {
    const missing = missingCommands(name);
    if (missing.length === 0) continue;
    if (isRequired(name)) process.stderr.write(`\nprefork tests: ${missing.join(' and ')} not found, and ${EXTERNAL_TOOLS[name].requiredBy}=required: ${EXTERNAL_TOOLS[name].suite} will fail\n`);
    else process.stderr.write(`\nprefork tests: skipping ${EXTERNAL_TOOLS[name].suite}: ${skipReason(name, missing)}\n`);
  }
}
