// The Node flags the image runs the agent with (Dockerfile NODE_OPTIONS), for every bench that
// starts an agent the way the image would. INFERTEL_BENCH_NODE_FLAGS overrides them.

export const IMAGE_NODE_FLAGS = (process.env.INFERTEL_BENCH_NODE_FLAGS ?? '--max-semi-space-size=2 --max-old-space-size=160').split(' ').filter(Boolean);
