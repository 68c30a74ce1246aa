// The command line: parses argv and the environment, loads config, starts the agent, and is the
// only place that calls process.exit (main.ts only watches signals first and loads this).

import { FLAVORS } from './sources/flavor.js';
import { Command, CommanderError, Option } from 'commander';
import { Agent } from './agent.js';
import { ConfigError, loadConfig, readConfigFile, validateConfig, type Overrides } from './config/load.js';
import { DEMO_ENGINES, runDemo } from './demo/demo.js';
import { agentDeps } from './runtime.js';
import { stopOnSignal, type Signals } from './signals.js';
import { redactUrl } from './net/http-client.js';
import { createLogger } from './logger.js';
import { loadWebhookConfig } from './webhook/config.js';
import type { InjectionConfig } from './webhook/mutate.js';
import type { AgentConfig } from './config/schema.js';
import { startWebhook } from './webhook/server.js';
import { VERSION } from './version.js';
import { hashKey, keyFromStdin } from './proxy/tenants.js';

const EXIT_USAGE = 2;

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** What commander hands `run`: the overrides, plus --config and the repeatable --upstream. */
type RunFlags = Omit<Overrides, 'upstreams'> & { config?: string; upstream?: string[] };

function overrides({ config: _config, upstream, ...rest }: RunFlags): Overrides {
  return upstream ? { ...rest, upstreams: upstream } : rest;
}

function addRunOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'YAML config file (env INFERTEL_CONFIG)')
    .option('--listen <host:port>', 'address of /metrics, /healthz, /readyz (env INFERTEL_LISTEN; default 0.0.0.0:9400)')
    .option(
      '--upstream <[flavor=]url>',
      `engine /metrics URL; flavor ${[...FLAVORS, 'auto'].join('|')}; repeatable (env INFERTEL_UPSTREAMS, comma-separated)`,
      collect,
    )
    .option('--model <name>', 'model label for upstreams whose metrics name none, e.g. TGI (env INFERTEL_MODEL)')
    .option('--interval <duration>', 'scrape interval, e.g. 1s, 10s (env INFERTEL_INTERVAL; default 10s)')
    .addOption(new Option('--units <profile>', 'ms: documented _ms names; seconds: _seconds names (env INFERTEL_UNITS)').choices(['ms', 'seconds']))
    .addOption(
      new Option('--histograms <mode>', 'rebucket onto documented layouts, or keep native bounds (env INFERTEL_HISTOGRAMS)').choices(['rebucket', 'native']),
    )
    .option('--proxy-listen <host:port>', 'run the inline proxy (request-level mode) on this address (env INFERTEL_PROXY_LISTEN)')
    .option('--proxy-target <url>', "the engine's base URL the proxy forwards to, e.g. http://127.0.0.1:8000 (env INFERTEL_PROXY_TARGET)")
    .option('--nvml-library <path>', 'path of libnvidia-ml.so.1 (env INFERTEL_NVML_LIBRARY)')
    .option('--amdsmi-library <path>', "path of AMD SMI's libamd_smi.so (env INFERTEL_AMDSMI_LIBRARY)")
    .addOption(new Option('--log-level <level>', 'log level (env INFERTEL_LOG_LEVEL)').choices(['debug', 'info', 'warn', 'error']));
}

function configFailure(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`infertel: ${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  throw err;
}

export async function main(argv: string[], signals: Signals): Promise<void> {
  const program = new Command('infertel')
    .description(
      'Telemetry sidecar for LLM inference servers: one Prometheus target for the engine metrics (vLLM, SGLang, TensorRT-LLM, Triton, llama.cpp, Dynamo, TGI) and the GPUs under them.',
    )
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  addRunOptions(program.command('run').description('scrape the configured upstreams and serve /metrics')).action(async (flags: RunFlags) => {
    let config: AgentConfig;
    try {
      config = loadConfig({ file: flags.config, env: process.env, flags: overrides(flags) });
    } catch (err) {
      configFailure(err);
    }
    if (config.upstreams.length === 0) process.stderr.write('infertel: warning: no upstreams configured (--upstream or INFERTEL_UPSTREAMS)\n');
    const deps = agentDeps(config);
    const agent = new Agent(config, deps);
    deps.log.info(
      {
        listen: config.listen,
        upstreams: config.upstreams.map((u) => redactUrl(u.url)),
        units: config.units,
        ...(config.proxy.listen ? { proxy: { listen: config.proxy.listen, target: redactUrl(config.proxy.target!) } } : {}),
      },
      'infertel starting',
    );
    if (signals.arrived()) return;
    try {
      await agent.start();
    } catch (err) {
      await agent.stop();
      configFailure(err);
    }
    await stopOnSignal(signals, () => agent.stop());
  });

  program
    .command('hash-key')
    .description('read one API key on stdin and print its sha256: form for tenants[].keys (a trailing newline is not part of the key)')
    .action(async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      const key = keyFromStdin(Buffer.concat(chunks).toString('utf8'));
      if (!key) {
        process.stderr.write('infertel: hash-key: no key on stdin\n');
        process.exit(EXIT_USAGE);
      }
      process.stdout.write(`${hashKey(key)}\n`);
    });

  program
    .command('check-config')
    .description('validate a config file: exit 0 if valid, 2 listing every problem')
    .argument('<file>')
    .action((file: string) => {
      try {
        const cfg = validateConfig(readConfigFile(file));
        process.stdout.write(`${file}: valid (${cfg.upstreams.length} upstream${cfg.upstreams.length === 1 ? '' : 's'})\n`);
      } catch (err) {
        configFailure(err);
      }
    });

  program
    .command('inject-webhook')
    .description('serve the sidecar-injection MutatingWebhook (admission.k8s.io/v1) over HTTPS')
    .option('--listen <host:port>', 'address of /mutate and /healthz', '0.0.0.0:8443')
    .option('--tls-cert <file>', 'serving certificate (reloaded when it changes)', '/etc/infertel-webhook/tls/tls.crt')
    .option('--tls-key <file>', 'serving key', '/etc/infertel-webhook/tls/tls.key')
    .option('--config <file>', 'injection config (image, port, resources, native sidecar default, …)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action(async (flags: { listen: string; tlsCert: string; tlsKey: string; config?: string; logLevel: string }) => {
      let config: InjectionConfig;
      try {
        config = loadWebhookConfig(flags.config);
      } catch (err) {
        configFailure(err);
      }
      const log = createLogger(flags.logLevel);
      const webhook = await startWebhook({ listen: flags.listen, certFile: flags.tlsCert, keyFile: flags.tlsKey, config, log });
      log.info({ component: 'webhook', listen: flags.listen, port: webhook.port, image: config.image }, 'injection webhook listening');
      await stopOnSignal(signals, () => webhook.close());
    });

  program
    .command('demo')
    .description(
      'start simulated engines on loopback (vLLM with 2 data-parallel engines and TGI by default), the agent scraping them, and the inline proxy in front of vLLM with a small load from several tenants',
    )
    .option('--engines <list>', `simulated engines, comma-separated: ${DEMO_ENGINES.join(', ')}`, 'vllm,tgi')
    .option('--listen <host:port>', 'agent address', '127.0.0.1:9400')
    .option('--interval <duration>', 'scrape interval', '2s')
    .option('--restart-every <duration>', 'how often the simulated TGI restarts (its counters reset)', '3m')
    .addOption(new Option('--units <profile>', 'unit profile').choices(['ms', 'seconds']).default('ms'))
    .option('--gpus <n|vendor[:n]>', 'simulated GPUs: a count of NVIDIA H100s, or amd[:n] for AMD MI300Xs (0 for none)', '2')
    .option('--proxy-listen <host:port>', 'inline proxy in front of the simulated vLLM ("off": none)', '127.0.0.1:9401')
    .option('--load <per-second>', 'built-in load through the proxy, requests per second (0: none)', '4')
    .action(
      async (flags: {
        listen: string;
        interval: string;
        restartEvery: string;
        units: string;
        gpus: string;
        engines: string;
        proxyListen: string;
        load: string;
      }) => {
        try {
          await runDemo(flags, signals);
        } catch (err) {
          configFailure(err);
        }
      },
    );

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(EXIT_USAGE);
    }
    process.stderr.write(`infertel: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  }
}
