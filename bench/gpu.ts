// GPU poll costs (filled in with the NVML addon).

export async function benchGpu(say: (s?: string) => void): Promise<void> {
  say('### GPU poll');
  say();
  say('(not built yet)');
}
