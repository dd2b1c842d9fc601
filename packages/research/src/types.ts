/** Chat-format types shared by the template renderer, the agent loop and the output. */

/** A function call made by the assistant, in OpenAI's chat format. */
export interface ToolCall {
  id: string;
  type: 'function';
  function: {
    name: string;
    /** The arguments exactly as the model wrote them (normally a JSON object). */
    arguments: string;
  };
}

/** One message of a conversation, in OpenAI's chat format plus Harmony's `thinking`. */
export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content: string;
  /** Analysis-channel text that preceded this assistant message. */
  thinking?: string;
  tool_calls?: ToolCall[];
  /** On tool messages: the call this answers. */
  tool_call_id?: string;
  /** On tool messages: the function that produced the content. */
  name?: string;
}

/** A function tool as chat templates expect it (OpenAI's tool shape). */
export interface ToolDefinition {
  type: 'function';
  function: {
    name: string;
    description: string;
    /** JSON Schema of the arguments object. */
    parameters: Record<string, unknown>;
  };
}
